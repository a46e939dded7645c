//! Pre-initializes the JavaScript runtime at build time: instantiates it, runs
//! its `wizer-initialize` export (QuickJS runtime, context and console) and
//! writes the instance's state back into the component (wasmtime-wizer). A run
//! then starts from a ready context instead of building one (ENGINES.md,
//! "Pre-initialization").

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, ComponentExportIndex, Instance, Lift, Linker, Val, WasmList};
use wasmtime::{Engine, Store};
use wasmtime_wizer::{ComponentInstanceState, Wizer};

/// What initialization sees of the host: fixed, so that the snapshot is the
/// same bytes on every build (see `define_clock_and_seed` for why no run
/// depends on them).
const BUILD_WALL_CLOCK_SECONDS: u64 = 1_767_225_600; // 2026-01-01T00:00:00Z
const BUILD_SEED: (u64, u64) = (0x6b69_6c6e_2d6a_7321, 0x7072_6569_6e69_7421);

/// Writes `<name>.init.wasm` beside `wasm` and returns it. Made on every run
/// of the build script (about a second), since it depends on this file as
/// much as on the runtime, but written only when its bytes change: every
/// profile and target shares the file, and a new timestamp would make the
/// others rebuild.
pub fn snapshot(wasm: &Path) -> PathBuf {
    let out = wasm.with_extension("init.wasm");
    let bytes = std::fs::read(wasm).expect("read the JavaScript runtime");
    let mut wizer = Wizer::new();
    // Removing the export breaks the component: wizer 48 drops the core
    // module's export of the same name while the component still lifts it.
    // Calling it again later only makes a fresh context.
    wizer.keep_init_func(true);
    let (cx, instrumented) = wizer
        .instrument_component(&bytes)
        .expect("instrument the JavaScript runtime");
    let engine = Engine::default();
    let component =
        Component::new(&engine, &instrumented).expect("compile the instrumented runtime");
    let mut linker = Linker::new(&engine);
    define_clock_and_seed(&engine, &component, &mut linker);
    // Initialization must not print, read files or the like: any other
    // import traps, which fails the build rather than snapshotting host state.
    linker
        .define_unknown_imports_as_traps(&component)
        .expect("stub the runtime's imports");
    let mut store = Store::new(&engine, ());
    let instance = linker
        .instantiate(&mut store, &component)
        .expect("instantiate the JavaScript runtime");
    let init = instance
        .get_typed_func::<(), ()>(&mut store, wizer.get_init_func())
        .expect("the JavaScript runtime exports wizer-initialize");
    init.call(&mut store, ()).expect("wizer-initialize trapped");
    let snapshot = block_on(wizer.snapshot_component(
        &cx,
        &mut Snapshotted {
            store: &mut store,
            instance,
        },
    ))
    .expect("snapshot the JavaScript runtime");
    if std::fs::read(&out).is_ok_and(|old| old == snapshot) {
        return out;
    }
    let partial = out.with_extension(format!("wasm.{}.partial", std::process::id()));
    std::fs::write(&partial, snapshot).expect("write the pre-initialized runtime");
    std::fs::rename(&partial, &out).expect("rename the pre-initialized runtime");
    out
}

/// What making a context reads from the host: QuickJS seeds `Math.random`
/// and its hash seed from the wall clock and takes `performance.timeOrigin`
/// from the monotonic clock, and rquickjs's maps take std's per-thread hash
/// keys from `wasi:random/insecure-seed`. All of it ends up in the snapshot,
/// shared by every run, so the build gives fixed values: the runtime replaces
/// `Math.random` with one seeded per instance and restarts `performance` per
/// run; the rest only keys hash tables inside the guest.
fn define_clock_and_seed(engine: &Engine, component: &Component, linker: &mut Linker<()>) {
    let imports: Vec<String> = component
        .component_type()
        .imports(engine)
        .map(|(name, _)| name.to_string())
        .collect();
    for import in imports {
        let defined = if import.starts_with("wasi:clocks/wall-clock@") {
            linker
                .instance(&import)
                .expect("a linker instance")
                .func_new("now", |_, _, _, results| {
                    results[0] = Val::Record(vec![
                        ("seconds".into(), Val::U64(BUILD_WALL_CLOCK_SECONDS)),
                        ("nanoseconds".into(), Val::U32(0)),
                    ]);
                    Ok(())
                })
        } else if import.starts_with("wasi:clocks/monotonic-clock@") {
            linker
                .instance(&import)
                .expect("a linker instance")
                .func_new("now", |_, _, _, results| {
                    results[0] = Val::U64(0);
                    Ok(())
                })
        } else if import.starts_with("wasi:random/insecure-seed@") {
            linker
                .instance(&import)
                .expect("a linker instance")
                .func_new("insecure-seed", |_, _, _, results| {
                    let (low, high) = BUILD_SEED;
                    results[0] = Val::Tuple(vec![Val::U64(low), Val::U64(high)]);
                    Ok(())
                })
        } else {
            Ok(())
        };
        defined.expect("define a host function for initialization");
    }
}

/// The instance as wizer reads it: its instrumented exports, called
/// synchronously, so every future below is ready when made.
struct Snapshotted<'a> {
    store: &'a mut Store<()>,
    instance: Instance,
}

impl Snapshotted<'_> {
    fn export(&mut self, instance: &str, func: &str) -> ComponentExportIndex {
        let (_, parent) = self
            .instance
            .get_export(&mut *self.store, None, instance)
            .expect("wizer's accessor instance");
        let (item, index) = self
            .instance
            .get_export(&mut *self.store, Some(&parent), func)
            .expect("wizer's accessor function");
        assert!(matches!(item, ComponentItem::ComponentFunc(_)));
        index
    }

    fn call<R: Lift + 'static>(&mut self, instance: &str, func: &str) -> R {
        let index = self.export(instance, func);
        let func = self
            .instance
            .get_typed_func::<(), (R,)>(&mut *self.store, index)
            .expect("wizer's accessor type");
        func.call(&mut *self.store, ()).expect("wizer's accessor").0
    }
}

impl ComponentInstanceState for Snapshotted<'_> {
    fn call_func_ret_list_u8(
        &mut self,
        instance: &str,
        func: &str,
        contents: impl FnOnce(&[u8]) + Send,
    ) -> impl Future<Output = ()> + Send {
        let list: WasmList<u8> = self.call(instance, func);
        contents(list.as_le_slice(&*self.store));
        std::future::ready(())
    }

    fn call_func_ret_s32(
        &mut self,
        instance: &str,
        func: &str,
    ) -> impl Future<Output = i32> + Send {
        std::future::ready(self.call(instance, func))
    }

    fn call_func_ret_s64(
        &mut self,
        instance: &str,
        func: &str,
    ) -> impl Future<Output = i64> + Send {
        std::future::ready(self.call(instance, func))
    }

    fn call_func_ret_f32(
        &mut self,
        instance: &str,
        func: &str,
    ) -> impl Future<Output = u32> + Send {
        std::future::ready(self.call::<f32>(instance, func).to_bits())
    }

    fn call_func_ret_f64(
        &mut self,
        instance: &str,
        func: &str,
    ) -> impl Future<Output = u64> + Send {
        std::future::ready(self.call::<f64>(instance, func).to_bits())
    }
}

/// Drives a future whose every await is already ready (see `Snapshotted`).
fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("the snapshot waited on something that cannot wake it"),
    }
}
