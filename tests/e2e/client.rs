//! The client verbs driven as a user drives them: the real binary against a
//! real `kiln serve`, with its own home directory for the login profiles.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::harness::{ADMIN_PASSWORD, Kiln};

/// `kiln ARGS` as a user with `home` as their home directory runs it.
fn client(home: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kiln"));
    command
        .args(args)
        .env("HOME", home)
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("KILN_PROFILE")
        .env_remove("KILN_LOG")
        .stdin(Stdio::null());
    command
}

fn run(home: &Path, args: &[&str]) -> Output {
    client(home, args).output().unwrap()
}

fn run_with_stdin(home: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = client(home, args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{stdin}\n").as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[track_caller]
fn ok(output: Output) -> String {
    assert_eq!(
        output.status.code(),
        Some(0),
        "stdout: {}\nstderr: {}",
        stdout(&output),
        stderr(&output)
    );
    stdout(&output)
}

fn login(kiln: &Kiln, home: &Path) {
    let out = run_with_stdin(
        home,
        &["login", &kiln.base, "-u", "admin", "--password-stdin"],
        ADMIN_PASSWORD,
    );
    assert_eq!(
        ok(out),
        format!("Logged in to {} as admin (profile default)\n", kiln.base)
    );
}

fn profiles(home: &Path) -> toml::Value {
    let text = std::fs::read_to_string(home.join(".config/kiln/profiles.toml")).unwrap();
    toml::from_str(&text).unwrap()
}

#[test]
fn login_whoami_and_logout_keep_the_credential_only_the_user_can_read() {
    let (kiln, _dir) = Kiln::start(&[]);
    let home = tempfile::tempdir().unwrap();
    let home = home.path();

    let out = run(home, &["whoami"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("not logged in (profile \"default\")"),
        "{}",
        stderr(&out)
    );

    let wrong = run_with_stdin(
        home,
        &["login", &kiln.base, "-u", "admin", "--password-stdin"],
        "not the password",
    );
    assert_eq!(wrong.status.code(), Some(1));
    let message = stderr(&wrong);
    assert!(
        message.contains("AUTHENTICATION_REQUIRED: ") && message.contains("(HTTP 401, request "),
        "{message}"
    );
    assert!(
        !home.join(".config/kiln/profiles.toml").exists(),
        "nothing kept"
    );

    login(&kiln, home);
    let file = home.join(".config/kiln/profiles.toml");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&file), 0o600);
    assert_eq!(mode(&home.join(".config/kiln")), 0o700);
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(!text.contains(ADMIN_PASSWORD), "the password is not kept");
    assert_eq!(
        ok(run(home, &["whoami"])),
        format!(
            "admin (admin) at {}, profile default, by a password login\n",
            kiln.base
        )
    );
    let me: Value = serde_json::from_str(&ok(run(home, &["whoami", "--json"]))).unwrap();
    assert_eq!(me["username"], "admin");

    // An API key in a second profile.
    let key = ok(run(home, &["keys", "create", "ci", "-s", "read:scripts"]));
    let key = key.trim();
    assert!(key.starts_with("kiln_"), "{key}");
    let out = run_with_stdin(
        home,
        &["login", &kiln.base, "--api-key-stdin", "--profile", "ci"],
        key,
    );
    ok(out);
    let whoami = ok(run(home, &["whoami", "--profile", "ci"]));
    assert!(
        whoami.contains(&format!("by API key {}…", &key[..9])),
        "{whoami}"
    );
    let out = run(home, &["ls", "executions", "--profile", "ci"]);
    assert_eq!(out.status.code(), Some(1), "the key cannot read executions");
    assert!(
        stderr(&out).contains("PERMISSION_DENIED"),
        "{}",
        stderr(&out)
    );

    // Logging out ends the session on the server too.
    let access = profiles(home)["profiles"]["default"]["credential"]["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        ok(run(home, &["logout"])),
        format!("Logged out of {}\n", kiln.base)
    );
    let after = kiln
        .with_token(&access, reqwest::Method::GET, "/v1/users/me")
        .send()
        .unwrap();
    assert_eq!(after.status(), 401, "the session's token stopped working");
    let out = run(home, &["whoami"]);
    assert_eq!(out.status.code(), Some(1));
    ok(run(home, &["whoami", "--profile", "ci"]));
}

#[test]
fn an_expiring_access_token_is_renewed_once_even_by_commands_at_the_same_time() {
    let (kiln, _dir) = Kiln::start(&[("KILN_AUTH_ACCESS_TTL_SECS", "1")]);
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    login(&kiln, home);
    let refresh = |home: &Path| {
        profiles(home)["profiles"]["default"]["credential"]["refresh_token"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let first = refresh(home);
    std::thread::sleep(Duration::from_millis(1_100));
    // Four at once: without the profiles' lock two of them would spend the
    // same refresh token, and the server revokes a session when that happens.
    let children: Vec<_> = (0..4)
        .map(|_| {
            client(home, &["whoami"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        ok(child.wait_with_output().unwrap());
    }
    assert_ne!(refresh(home), first, "the session was renewed");
    std::thread::sleep(Duration::from_millis(1_100));
    ok(run(home, &["whoami"]));
}

#[test]
fn deploy_exec_logs_ls_and_rm_a_script() {
    let (kiln, _dir) = Kiln::start(&[]);
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    login(&kiln, home);
    let work = tempfile::tempdir().unwrap();
    let script = work.path().join("hello.js");
    std::fs::write(
        &script,
        "function main(p) { console.log('hi ' + p.name); return { n: p.n * 2 }; }",
    )
    .unwrap();
    let script = script.to_str().unwrap();
    let deployed = ok(run(home, &["deploy", script]));
    assert!(
        deployed.starts_with("Created hello: version 1 (javascript "),
        "{deployed}"
    );
    assert!(deployed.contains("Run it:   kiln exec hello"), "{deployed}");

    let out = ok(run(
        home,
        &["exec", "hello", "-p", "name=ada", "-p", "n:=21"],
    ));
    assert_eq!(out, "hi ada\n{\"n\":42}\n");

    std::fs::write(
        work.path().join("hello.js"),
        "function main(p) { console.log('hello ' + p.name); return p.name.length; }",
    )
    .unwrap();
    let redeployed = ok(run(home, &["deploy", script]));
    assert!(
        redeployed.starts_with("Updated hello: version 2"),
        "{redeployed}"
    );
    let params = work.path().join("params.json");
    std::fs::write(&params, r#"{"name": "grace"}"#).unwrap();
    let at_file = format!("@{}", params.display());
    let view: Value = serde_json::from_str(&ok(run(
        home,
        &["exec", "hello", "--params", &at_file, "--json"],
    )))
    .unwrap();
    assert_eq!(view["status"], "completed");
    assert_eq!(view["stdout"], "hello grace\n");
    assert_eq!(view["result"], 5);
    assert_eq!(view["script_version"], 2);

    // A bundle from a directory.
    let bundle = work.path().join("twice");
    std::fs::create_dir_all(bundle.join("lib")).unwrap();
    std::fs::write(
        bundle.join("main.js"),
        "import { twice } from './lib/twice.js';\nexport default (p) => twice(p.n);",
    )
    .unwrap();
    std::fs::write(
        bundle.join("lib/twice.js"),
        "export const twice = (n) => 2 * n;",
    )
    .unwrap();
    let deployed = ok(run(home, &["deploy", bundle.to_str().unwrap()]));
    assert!(
        deployed.starts_with("Created twice: version 1"),
        "{deployed}"
    );
    assert_eq!(ok(run(home, &["exec", "twice", "-p", "n:=8"])), "16\n");

    // On a schedule, named after the script and moved by a redeploy.
    let bundle = bundle.to_str().unwrap();
    let scheduled = ok(run(
        home,
        &[
            "deploy",
            bundle,
            "--schedule",
            "0 5 * * *",
            "--tz",
            "Europe/Paris",
        ],
    ));
    assert!(
        scheduled.contains("Schedule: 0 5 * * * (Europe/Paris), next run 20"),
        "{scheduled}"
    );
    ok(run(home, &["deploy", bundle, "--schedule", "30 6 * * *"]));
    let schedules: Value =
        serde_json::from_str(&ok(run(home, &["ls", "schedules", "--json"]))).unwrap();
    let schedules = schedules["data"].as_array().unwrap();
    assert_eq!(schedules.len(), 1, "{schedules:?}");
    assert_eq!(schedules[0]["name"], "twice");
    assert_eq!(schedules[0]["cron"], "30 6 * * *");
    assert_eq!(
        schedules[0]["timezone"], "Europe/Paris",
        "kept without --tz"
    );

    // Exit statuses as `kiln run` gives them.
    std::fs::write(
        work.path().join("boom.js"),
        "function main() { throw new Error('boom'); }",
    )
    .unwrap();
    std::fs::write(
        work.path().join("spin.js"),
        "function main() { for (;;) {} }",
    )
    .unwrap();
    for name in ["boom.js", "spin.js"] {
        ok(run(
            home,
            &["deploy", work.path().join(name).to_str().unwrap()],
        ));
    }
    let boom = run(home, &["exec", "boom"]);
    assert_eq!(boom.status.code(), Some(125));
    assert!(stderr(&boom).contains("boom"), "{}", stderr(&boom));
    let spin = run(home, &["exec", "spin", "--timeout-ms", "300"]);
    assert_eq!(spin.status.code(), Some(124), "{}", stderr(&spin));

    // The README's key for programs can run a script and read what it did.
    let key = ok(run(
        home,
        &[
            "keys",
            "create",
            "runner",
            "-s",
            "read:scripts,execute:scripts,read:executions",
        ],
    ));
    let out = run_with_stdin(
        home,
        &[
            "login",
            &kiln.base,
            "--api-key-stdin",
            "--profile",
            "runner",
        ],
        key.trim(),
    );
    ok(out);
    assert_eq!(
        ok(run(
            home,
            &["exec", "hello", "-p", "name=bot", "--profile", "runner"]
        )),
        "hello bot\n3\n"
    );

    // Started without waiting, then read back.
    let id = ok(run(home, &["exec", "hello", "-p", "name=lin", "--async"]));
    let id = id.trim();
    assert_eq!(ok(run(home, &["logs", id, "--follow"])), "hello lin\n");
    assert_eq!(ok(run(home, &["logs", id])), "hello lin\n");

    let table = ok(run(home, &["ls", "scripts"]));
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("NAME "), "{table}");
    let column = lines[0].find("LANGUAGE").unwrap();
    for row in &lines[1..] {
        assert_eq!(
            row.find("javascript"),
            Some(column),
            "columns line up:\n{table}"
        );
    }
    let names: Vec<&str> = lines[1..]
        .iter()
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    for name in ["hello", "twice", "boom", "spin"] {
        assert!(names.contains(&name), "{table}");
    }
    let executions: Value =
        serde_json::from_str(&ok(run(home, &["ls", "executions", "--json", "-n", "2"]))).unwrap();
    assert_eq!(executions["data"].as_array().unwrap().len(), 2);
    assert!(ok(run(home, &["status"])).starts_with("Kiln "));

    assert_eq!(
        ok(run(home, &["rm", "script", "hello", "spin"])),
        "Removed script hello\nRemoved script spin\n"
    );
    let gone = run(home, &["exec", "hello"]);
    assert_eq!(gone.status.code(), Some(1));
    let message = stderr(&gone);
    assert!(
        message.starts_with("kiln: RESOURCE_NOT_FOUND: ") && message.contains("request "),
        "{message}"
    );
    let bad = run(home, &["exec", "a/b"]);
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
}

#[test]
fn exec_writes_output_while_the_script_still_runs() {
    let (kiln, _dir) = Kiln::start(&[]);
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    login(&kiln, home);
    kiln.create_script(
        "slow",
        "javascript",
        "function main() { console.log('first'); const end = Date.now() + 4000; \
         while (Date.now() < end) {} console.log('second'); return null; }",
    );
    let mut child = client(home, &["exec", "slow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "first\n");
    let listing: Value = kiln
        .get("/v1/executions?size=1")
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        listing["data"][0]["status"], "running",
        "the first line came while the run went on"
    );
    line.clear();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "second\n");
    assert!(child.wait().unwrap().success());
}

/// `kiln exec -i`: each line typed reaches the run while it runs and is
/// answered before the next is typed; the end of stdin ends the run's.
#[test]
fn exec_interactive_sends_stdin_as_it_is_typed() {
    let (kiln, _dir) = Kiln::start(&[]);
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    login(&kiln, home);
    kiln.create_component("echo", kiln_components::ECHO_LINES);
    let mut child = client(home, &["exec", "echo", "-i", "--timeout-ms", "60000"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut typed = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    for word in ["one", "two"] {
        writeln!(typed, "{word}").unwrap();
        line.clear();
        stdout.read_line(&mut line).unwrap();
        assert_eq!(line, format!("echo: {word}\n"));
    }
    let listing: Value = kiln
        .get("/v1/executions?size=1")
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(listing["data"][0]["status"], "running", "it waits for more");
    assert_eq!(listing["data"][0]["interactive"], true);
    drop(typed);
    line.clear();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "read 2 lines\n");
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));

    // Not with --async: nobody would be there to type.
    let both = run(home, &["exec", "echo", "-i", "--async"]);
    assert_eq!(both.status.code(), Some(2), "{}", stderr(&both));

    // A run that ends before our stdin does: kiln exits with it, not at
    // the next line typed.
    kiln.create_script(
        "once",
        "python",
        "import sys\n\ndef main():\n    print(sys.stdin.readline().upper(), end='')\n",
    );
    let mut child = client(home, &["exec", "once", "-i"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut typed = child.stdin.take().unwrap();
    writeln!(typed, "just this").unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "kiln waits for stdin after the run ended"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "JUST THIS\n");
    drop(typed);
}

#[test]
fn an_unreachable_server_is_named() {
    let home = tempfile::tempdir().unwrap();
    // A port nothing listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let out = run_with_stdin(
        home.path(),
        &["login", &url, "-u", "admin", "--password-stdin"],
        "pw",
    );
    assert_eq!(out.status.code(), Some(1));
    let message = stderr(&out);
    assert!(
        message.starts_with(&format!("kiln: cannot reach {url}: ")) && message.contains("running"),
        "{message}"
    );
}

#[test]
fn a_deployed_http_function_is_public_only_while_deployed_so() {
    let (kiln, _dir) = Kiln::start(&[]);
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    login(&kiln, home);
    let component = kiln_components::HTTP_HELLO;
    let deployed = ok(run(
        home,
        &["deploy", component, "--name", "web", "--public"],
    ));
    assert!(
        deployed.starts_with("Created web: version 1 (wasm http"),
        "{deployed}"
    );
    assert!(
        deployed.contains(&format!("Call it:  curl {}/fn/web/", kiln.base)),
        "{deployed}"
    );
    let call = || {
        kiln.anonymous(reqwest::Method::GET, "/fn/web/")
            .send()
            .unwrap()
            .status()
    };
    assert_eq!(call(), 200);
    let redeployed = run(home, &["deploy", component, "--name", "web"]);
    assert!(
        stderr(&redeployed).contains("web is no longer public"),
        "{}",
        stderr(&redeployed)
    );
    ok(redeployed);
    assert_eq!(call(), 401, "a redeploy without --public is private again");

    // The same over HTTP, raw: `public` in the query (it was an unknown field).
    let raw = kiln
        .post("/v1/scripts?name=web2&language=wasm&public=true")
        .header("content-type", "application/wasm")
        .body(std::fs::read(component).unwrap())
        .send()
        .unwrap();
    assert_eq!(raw.status(), 201);
    let anonymous = kiln
        .anonymous(reqwest::Method::GET, "/fn/web2/")
        .send()
        .unwrap();
    assert_eq!(anonymous.status(), 200);
}

#[test]
fn login_asks_for_a_one_time_code_when_the_account_has_them_on() {
    let (kiln, _dir) = Kiln::start(&[]);
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let (_, token) = kiln.create_user("ada", "developer");
    let setup: Value = kiln
        .with_token(&token, reqwest::Method::POST, "/v1/users/me/totp")
        .json(&serde_json::json!({"current_password": "ada password"}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let secret = totp_rs::Secret::Encoded(setup["secret"].as_str().unwrap().to_owned())
        .to_bytes()
        .unwrap();
    let app = totp_rs::TOTP::new(totp_rs::Algorithm::SHA1, 6, 0, 30, secret).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // Taken at once, so a step boundary passing changes nothing.
    let (first, next) = (app.generate(now), app.generate(now + 30));
    let confirmed = kiln
        .with_token(&token, reqwest::Method::POST, "/v1/users/me/totp/confirm")
        .json(&serde_json::json!({"code": first}))
        .send()
        .unwrap();
    assert_eq!(confirmed.status(), 200);

    let login_args = ["login", &kiln.base, "-u", "ada", "--password-stdin"];
    let asked = run_with_stdin(home, &login_args, "ada password");
    assert_eq!(asked.status.code(), Some(2), "{}", stderr(&asked));
    assert!(
        stderr(&asked).contains("wants a one-time code as well: pass --otp CODE"),
        "{}",
        stderr(&asked)
    );
    let mut with_code = login_args.to_vec();
    with_code.extend(["--otp", &next]);
    let out = run_with_stdin(home, &with_code, "ada password");
    assert!(ok(out).starts_with("Logged in to "));
    assert!(ok(run(home, &["whoami"])).starts_with("ada (developer)"));
    // The same code a second time is refused.
    let again = run_with_stdin(home, &with_code, "ada password");
    assert_eq!(again.status.code(), Some(1));
    assert!(
        stderr(&again).contains("AUTHENTICATION_REQUIRED"),
        "{}",
        stderr(&again)
    );
}

#[test]
fn passwd_changes_the_password_and_keeps_this_session() {
    let (kiln, _dir) = Kiln::start(&[]);
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    kiln.create_user("bo", "viewer");
    let login_args = ["login", &kiln.base, "-u", "bo", "--password-stdin"];
    ok(run_with_stdin(home, &login_args, "bo password"));

    let wrong = run_with_stdin(home, &["passwd", "--stdin"], "not it\nbo's new password\n");
    assert_eq!(wrong.status.code(), Some(1));
    assert!(
        stderr(&wrong).contains("PERMISSION_DENIED"),
        "{}",
        stderr(&wrong)
    );
    let changed = ok(run_with_stdin(
        home,
        &["passwd", "--stdin"],
        "bo password\nbo's new password\n",
    ));
    assert!(changed.starts_with("Password changed for bo"), "{changed}");
    // This profile's session goes on; the old password is gone.
    assert!(ok(run(home, &["whoami"])).starts_with("bo (viewer)"));
    let old = run_with_stdin(home, &login_args, "bo password");
    assert_eq!(old.status.code(), Some(1));
    ok(run_with_stdin(home, &login_args, "bo's new password"));
}

#[test]
fn org_picks_the_organization_a_command_acts_in() {
    let (kiln, _data) = Kiln::start(&[]);
    let home = tempfile::tempdir().unwrap();
    login(&kiln, home.path());
    let made = kiln
        .post("/v1/organizations")
        .json(&serde_json::json!({"name": "acme", "admin": "admin"}))
        .send()
        .unwrap();
    assert_eq!(made.status(), 201);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("only-in-acme.js");
    std::fs::write(&file, "function main() { return 'acme'; }").unwrap();
    let file = file.to_str().unwrap();
    ok(run(home.path(), &["deploy", file, "--org", "acme"]));
    let theirs = ok(run(home.path(), &["ls", "scripts", "--org", "acme"]));
    assert!(theirs.contains("only-in-acme"), "{theirs}");
    // Without it, the user's first organization, where it is not.
    let own = ok(run(home.path(), &["ls", "scripts"]));
    assert!(!own.contains("only-in-acme"), "{own}");
    // One the user is not in is the 404 of none.
    let refused = run(home.path(), &["ls", "scripts", "--org", "elsewhere"]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("RESOURCE_NOT_FOUND"),
        "{}",
        stderr(&refused)
    );
}
