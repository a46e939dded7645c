//! `kiln serve`: open the store, start the sandbox and workers, recover what a
//! crash left behind, load the language runtimes (`/readyz` is 503 until
//! they are usable), serve HTTP until SIGTERM/SIGINT, then drain in three
//! steps: `/readyz` 503 while requests are still accepted for
//! `server.drain_delay_ms` (so a load balancer stops sending first); then no
//! new connections, and running executions get `server.drain_timeout_ms` to
//! finish (the rest are INTERRUPTED, queued ones wait for the next start);
//! then requests still waiting for an execution answer 202 with its id.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use kiln_runtime::{EngineOptions, Sandbox};

use crate::api::{self, AppState};
use crate::config::Config;
use crate::jobs::{self, Jobs};
use crate::metrics::Metrics;
use crate::runtimes::Runtimes;
use crate::store::{PgStore, SledStore, Store};

/// Runs the server until a shutdown signal.
///
/// # Errors
///
/// Start-up failures: the data directory, the store, the engine, the listener;
/// and a first admin that could not be made (the server stops after it).
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let begun = std::time::Instant::now();
    let program = crate::compiler::this_program();
    if program.is_none() {
        tracing::warn!(
            "cannot find this binary's path: compiles run in the server's process, bounded only by the validation limits"
        );
    }
    // First, so that a port in use stops the start before anything is
    // written (the data directory, the first admin's password file).
    let listen = config.server.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let address = listener.local_addr()?;
    let state = assemble(config, program).await?;
    let phase =
        |name: &str| tracing::debug!(ms = begun.elapsed().as_millis() as u64, "start-up: {name}");
    phase("bound; store, authentication, engine, webhooks, workers");
    let (store, jobs, webhooks) = (
        state.store.clone(),
        state.jobs.clone(),
        state.webhooks.clone(),
    );
    jobs::recover(store.as_ref(), &jobs)
        .await
        .context("cannot recover executions")?;
    phase("executions recovered");
    if state.config.store.shared {
        jobs.set_shared();
        tokio::spawn(jobs::leases::keep(store.clone(), jobs.clone()));
        tokio::spawn(jobs::signals::listen(store.clone(), jobs.clone()));
        tokio::spawn(jobs::signals::relay(store.clone(), jobs.clone()));
    }
    tokio::spawn(forget_idle_buckets(state.limits.clone()));
    if cfg!(feature = "mimalloc") {
        tokio::spawn(crate::memory::release_when_idle(jobs.clone()));
    }
    let lifecycle = state.lifecycle.clone();
    let drain_timeout = std::time::Duration::from_millis(state.config.server.drain_timeout_ms);
    let drain_delay = std::time::Duration::from_millis(state.config.server.drain_delay_ms);
    let (stop, mut stopping) = tokio::sync::watch::channel(false);
    tokio::spawn(crate::webhooks::deliver::run(webhooks, stopping.clone()));
    let sweeper = crate::retention::Sweeper::new(
        state.store.clone(),
        state.jobs.clone(),
        state.config.retention.clone(),
        state.metrics.swept(),
    )
    .with_artifacts(state.runtimes.sandbox().clone());
    tokio::spawn(crate::retention::run(sweeper, stopping.clone()));
    let scheduler = crate::schedules::Scheduler {
        store: state.store.clone(),
        jobs: state.jobs.clone(),
        quotas: state.quotas.clone(),
        limits: state.config.limits.clone(),
    };
    tokio::spawn(crate::schedules::run(
        scheduler,
        state.schedules_changed.clone(),
        stopping.clone(),
    ));
    if state.config.store.shared {
        tokio::spawn(follow_other_nodes(
            state.schedules_changed.clone(),
            state.webhooks.clone(),
        ));
    }
    let first_admin = state.auth.clone();
    let state_config = state.config.clone();
    let connection_metrics = state.metrics.clone();
    let trusted_proxies = state.trusted_proxies.clone();
    let runtimes = state.runtimes.clone();
    let app = api::router(state);
    // A stable first line that scripts and the end-to-end tests read the
    // address from; the runtimes' lines come after it.
    announce(&format!("Kiln listening on http://{address}"));
    tracing::info!(%address, startup_ms = begun.elapsed().as_millis(), "listening");
    tokio::spawn(load_runtimes(runtimes, lifecycle.clone(), begun));

    let draining = lifecycle.clone();
    let first_admin_failed = Arc::new(AtomicBool::new(false));
    let failed = first_admin_failed.clone();
    let server = &state_config.server;
    let limits = crate::http_server::ConnectionLimits {
        max: server.max_connections,
        per_ip: server.max_connections_per_ip,
        header_read_timeout: std::time::Duration::from_millis(server.header_read_timeout_ms),
        trusted: trusted_proxies,
    };
    let refused = move || connection_metrics.connection_refused();
    let server = crate::http_server::serve(listener, app, limits, refused, async move {
        let signalled = tokio::select! {
            () = shutdown_signal() => true,
            Err(e) = first_admin.first_admin_made() => {
                tracing::error!(error = %e, "stopping: the server cannot be used without its first admin");
                failed.store(true, Ordering::Release);
                false
            }
        };
        draining.drain();
        if signalled && !drain_delay.is_zero() {
            tracing::info!(
                delay_ms = drain_delay.as_millis() as u64,
                "draining: /readyz answers 503; requests are still served until the delay ends"
            );
            tokio::time::sleep(drain_delay).await;
        }
        tracing::info!("shutting down: no new connections; running executions may finish");
        stop.send_replace(true);
    });
    let server = tokio::spawn(server);
    // Drain the workers while HTTP winds down, so requests waiting for a
    // result get it (or its INTERRUPTED record) and can finish.
    let _ = stopping.wait_for(|stop| *stop).await;
    jobs.drain(drain_timeout).await;
    // Nothing queued or running ends in this process any more: requests
    // waiting for one answer 202 (its record stays, queued or final).
    lifecycle.release_waiters();
    match tokio::time::timeout(std::time::Duration::from_secs(5), server).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "the HTTP server task failed"),
        Err(_) => tracing::warn!("open connections did not close in time; exiting anyway"),
    }
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || handle.block_on(store.close())).await??;
    tracing::info!("stopped");
    if first_admin_failed.load(Ordering::Acquire) {
        anyhow::bail!("the first admin could not be created (see the log above)");
    }
    Ok(())
}

/// What other nodes sharing the store change without this node hearing
/// of it, looked at again every [`FOLLOW_EVERY`]: the scheduler reads the
/// schedules again (a schedule made elsewhere fires here too; each tick
/// fires once whoever claims it), and the webhooks' subscriptions are read
/// again (an event here reaches a webhook made elsewhere).
async fn follow_other_nodes(
    schedules_changed: Arc<tokio::sync::Notify>,
    webhooks: Arc<crate::webhooks::Webhooks>,
) {
    loop {
        tokio::time::sleep(FOLLOW_EVERY).await;
        schedules_changed.notify_one();
        if let Err(e) = webhooks.reload().await {
            tracing::warn!(error = %e, "cannot read the webhooks again");
        }
    }
}

/// How often a node sharing its store reads what other nodes change.
const FOLLOW_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// This node's id among those sharing a store: made once into
/// `<data_dir>/node-id`, so a restart on the same data directory is the
/// same node (its runs the crash cut short are ended at start, not when
/// their lease runs out).
fn node_id(data: &std::path::Path) -> anyhow::Result<String> {
    let path = data.join("node-id");
    match std::fs::read_to_string(&path) {
        Ok(id) if uuid::Uuid::try_parse(id.trim()).is_ok() => return Ok(id.trim().to_owned()),
        Ok(_) => anyhow::bail!("{} does not hold a node id", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
    let id = uuid::Uuid::now_v7().to_string();
    // Whole or not at all: a crash must not leave a file that refuses
    // every later start.
    let partial = data.join("node-id.partial");
    std::fs::write(&partial, &id)
        .and_then(|()| std::fs::rename(&partial, &path))
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(id)
}

/// Loads (compiles, or reads from the cache) both language runtimes, then
/// says the node is ready: its first script runs must not wait seconds for
/// them. A runtime that does not load leaves the node unready.
async fn load_runtimes(
    runtimes: Arc<Runtimes>,
    lifecycle: Arc<crate::lifecycle::Lifecycle>,
    begun: std::time::Instant,
) {
    use crate::store::Language;
    for (language, name) in [
        (Language::Javascript, "JavaScript"),
        (Language::Python, "Python"),
    ] {
        lifecycle.loading(format!("the {name} runtime"));
        // A failed compile (its child killed for memory, say) is tried
        // again, less and less often: the node is not ready meanwhile.
        let mut pause = std::time::Duration::from_secs(1);
        let mut announced = false;
        loop {
            let started = std::time::Instant::now();
            tracing::info!(?language, "start-up: loading a language runtime");
            let load = runtimes.get(language);
            tokio::pin!(load);
            // A read from the compile cache takes well under a second; what
            // takes longer is a compile, which a user should hear of.
            let loaded = tokio::select! {
                loaded = &mut load => loaded,
                () = tokio::time::sleep(ANNOUNCE_AFTER) => {
                    if !announced {
                        announced = true;
                        announce(&format!(
                            "Compiling the {name} runtime for this machine (a first start only); /readyz answers 503 until it is done"
                        ));
                    }
                    load.await
                }
            };
            match loaded {
                Ok(loaded) => {
                    let ms = crate::millis(started.elapsed());
                    tracing::info!(
                        ?language,
                        ms,
                        compiled = loaded.compiled,
                        "start-up: language runtime loaded"
                    );
                    if announced {
                        announce(&format!(
                            "The {name} runtime is ready: {} in {:.1} s",
                            if loaded.compiled {
                                "compiled"
                            } else {
                                "loaded"
                            },
                            ms as f64 / 1000.0
                        ));
                    }
                    break;
                }
                Err(e) => {
                    tracing::error!(?language, error = %e, retry_in_s = pause.as_secs(),
                        "the language runtime does not load; the node stays unready");
                    announce(&format!(
                        "The {name} runtime did not load ({e}); trying again in {} s, and the node stays unready",
                        pause.as_secs()
                    ));
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(std::time::Duration::from_secs(60));
                }
            }
        }
    }
    lifecycle.ready();
    tracing::info!(startup_ms = begun.elapsed().as_millis() as u64, "ready");
    // Reading the runtimes in (decompressing them, loading their code) left
    // freed memory that an idle node would otherwise keep until its first
    // runs: the idle release after start-up ran before this finished.
    let _ = tokio::task::spawn_blocking(crate::memory::release_unused).await;
}

/// How long a runtime loads before the start-up says it is compiling.
const ANNOUNCE_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// A start-up line on stdout, beside "Kiln listening on", whatever
/// `KILN_LOG` hides. Whoever started the server may have stopped reading
/// (a closed pipe): that is no reason to fail.
fn announce(line: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

/// Files and directories this process makes are its user's alone (0600,
/// 0700): the store holds sealed secrets, but also everything else of its
/// users.
fn private_files() {
    #[cfg(target_os = "linux")]
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
}

/// One node's parts, made from `config` and wired together: the store and
/// authentication (the first admin made in the background), the engine,
/// compiler and runtimes, metrics, webhooks, and the queue with its workers
/// started. Nothing listens or fires yet, and the node is not ready: `serve`
/// adds the socket, the recovery and the background tasks; the in-process API
/// tests drive the router over it as it is. `program` is the binary compiles
/// run in (`None`: in this process).
///
/// # Errors
///
/// The data directory, the store, authentication, the engine or the webhooks
/// cannot be set up.
pub(crate) async fn assemble(
    config: Config,
    program: Option<std::path::PathBuf>,
) -> anyhow::Result<AppState> {
    assemble_with(config, program, Arc::new(crate::store::Fsync)).await
}

/// [`assemble`] with the store's files made durable by `syncer`: the
/// durability tests give one that notes what each sync covered.
pub(crate) async fn assemble_with(
    config: Config,
    program: Option<std::path::PathBuf>,
    syncer: Arc<dyn crate::store::FileSyncer>,
) -> anyhow::Result<AppState> {
    let data = &config.server.data_dir;
    private_files();
    std::fs::create_dir_all(data)
        .with_context(|| format!("cannot create the data directory {}", data.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(data, std::fs::Permissions::from_mode(0o700)).with_context(
            || format!("cannot make the data directory {} private", data.display()),
        )?;
    }
    let vault = Arc::new(
        crate::vault::Vault::open(config.auth.master_key.as_ref(), data)
            .context("cannot open the master key")?,
    );
    let store: Arc<dyn Store> = match &config.store.url {
        Some(url) => {
            let store = PgStore::connect_as(&url.0, &node_id(data)?)
                .await
                .context("cannot open the PostgreSQL store (store.url)")?;
            if config.store.shared {
                store.share();
            } else {
                store
                    .claim_node()
                    .await
                    .context("cannot open the PostgreSQL store (store.url)")?;
            }
            Arc::new(store)
        }
        None => Arc::new(
            SledStore::open_with(
                &data.join("db"),
                config.server.store_cache_mb.saturating_mul(1 << 20),
                syncer,
            )
            .with_context(|| format!("cannot open the store in {}", data.display()))?,
        ),
    };
    let auth = Arc::new(
        crate::auth::Auth::open(store.clone(), &config)
            .await
            .context("cannot set up authentication")?,
    );
    if auth.first_admin_pending() {
        auth.make_first_admin_in_background(&config)
            .context("cannot set up authentication")?;
    }
    let sandbox = Arc::new(Sandbox::new(EngineOptions {
        cache_dir: Some(crate::config::cache_dir(&config)),
        max_instances: u32::try_from(config.workers.count.saturating_mul(2).max(16))
            .unwrap_or(u32::MAX),
        max_memory_bytes: config.limits.max_memory_mb.saturating_mul(1 << 20),
        ..EngineOptions::default()
    })?);
    let limits = Arc::new(crate::ratelimit::RateLimits::new(&config.rate_limit));
    let compiler = crate::compiler::Compiler::new(
        program,
        crate::compiler::CompileBounds::for_tenants(&config.limits),
    );
    let runtimes = Arc::new(Runtimes::new(sandbox.clone(), compiler.clone()));
    let mut metrics = Metrics::new();
    let webhooks = crate::webhooks::Webhooks::new(
        store.clone(),
        vault.clone(),
        config.webhooks.clone(),
        metrics.webhooks(),
    )
    .await
    .context("cannot load the webhooks")?;
    let jobs = Jobs::new(
        config.workers.count,
        config.workers.queue_capacity,
        crate::jobs::QueueShare {
            queued: config.workers.queued_per_user,
            running: config.workers.running_per_user,
            queued_per_org: config.workers.queued_per_org,
            running_per_org: config.workers.running_per_org,
        },
        metrics.executions(),
    );
    let egress = crate::egress::Gateway::new(&config.egress, metrics.egress())
        .map_err(anyhow::Error::msg)?;
    let worker = crate::executions::Worker {
        store: store.clone(),
        runtimes: runtimes.clone(),
        jobs: jobs.clone(),
        limits: config.limits.clone(),
        egress: egress.clone(),
        vault: vault.clone(),
    };
    let quotas = Arc::new(crate::quotas::Quotas::new(store.clone(), jobs.clone()));
    // Before any worker takes a run: organizations' running bounds.
    quotas
        .load()
        .await
        .map_err(|e| anyhow::anyhow!("cannot read the organizations: {e}"))?;
    jobs.spawn_workers(config.workers.count, Arc::new(worker));
    jobs.on_final(Arc::new(api::webhooks::ExecutionEvents(webhooks.clone())));
    metrics.watch(jobs.clone(), sandbox.clone(), store.clone(), compiler);
    if config.server.metrics_per_org {
        metrics.watch_quotas(quotas.clone());
    }
    let trusted_proxies = crate::client_ip::TrustedProxies::parse(
        &config.server.trusted_proxies,
        config.server.forwarded_header,
    )
    .map_err(|e| anyhow::anyhow!("server.trusted_proxies: {e}"))?;
    Ok(AppState::new(crate::api::Shared {
        store,
        sandbox,
        runtimes,
        jobs,
        quotas,
        metrics: Arc::new(metrics),
        config: Arc::new(config),
        lifecycle: Arc::default(),
        started: std::time::Instant::now(),
        schedules_changed: Arc::new(tokio::sync::Notify::new()),
        auth,
        limits,
        webhooks,
        egress,
        vault,
        trusted_proxies,
    }))
}

/// Drops rate-limit buckets that have refilled, every minute.
async fn forget_idle_buckets(limits: Arc<crate::ratelimit::RateLimits>) {
    let mut every_minute = tokio::time::interval(std::time::Duration::from_secs(60));
    loop {
        every_minute.tick().await;
        limits.forget_idle();
    }
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut signal) => {
                    signal.recv().await;
                }
                Err(_) => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = interrupt => {}
            () = terminate => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
