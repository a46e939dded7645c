//! Pre-initializes the JavaScript runtime at build time: instantiates it, runs
//! its `wizer-initialize` export (QuickJS runtime, context, console and
//! `Math.random`) and writes the instance's state back into the component
//! (wasmtime-wizer). A run then starts from a ready context instead of
//! building one (ENGINES.md, "Pre-initialization").

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use wasmtime::component::{Component, ComponentExportIndex, Instance, Lift, Linker, Val, WasmList};
use wasmtime::{Engine, Store};
use wasmtime_wizer::{ComponentInstanceState, Wizer};

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
    define_build_host(&engine, &component, &mut linker);
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
    crate::write_aside_and_rename(&out, &snapshot);
    out
}

/// What making a context reads from the host: QuickJS seeds `Math.random`
/// and its hash seed from the wall clock and takes `performance.timeOrigin`
/// from the monotonic clock, and rquickjs's maps take std's per-thread hash
/// keys from `wasi:random/insecure-seed`. All of it ends up in the snapshot,
/// shared by every run, so the build answers with fixed values and the
/// snapshot is the same bytes on every build: the runtime replaces
/// `Math.random` with one seeded per instance and restarts `performance` per
/// run; the rest only keys hash tables inside the guest.
const BUILD_HOST: &[HostFunc] = &[
    HostFunc {
        instance: "wasi:clocks/wall-clock@",
        func: "now",
        answer: || {
            Val::Record(vec![
                // 2026-01-01T00:00:00Z
                ("seconds".into(), Val::U64(1_767_225_600)),
                ("nanoseconds".into(), Val::U32(0)),
            ])
        },
    },
    HostFunc {
        instance: "wasi:clocks/monotonic-clock@",
        func: "now",
        answer: || Val::U64(0),
    },
    HostFunc {
        instance: "wasi:random/insecure-seed@",
        func: "insecure-seed",
        answer: || {
            Val::Tuple(vec![
                Val::U64(0x6b69_6c6e_2d6a_7321),
                Val::U64(0x7072_6569_6e69_7421),
            ])
        },
    },
];

/// A host function initialization may call, with its fixed answer.
struct HostFunc {
    /// The import's instance name up to its version.
    instance: &'static str,
    func: &'static str,
    answer: fn() -> Val,
}

fn define_build_host(engine: &Engine, component: &Component, linker: &mut Linker<()>) {
    let imports: Vec<String> = component
        .component_type()
        .imports(engine)
        .map(|(name, _)| name.to_string())
        .collect();
    for import in imports {
        for host in BUILD_HOST {
            if import.starts_with(host.instance) {
                let answer = host.answer;
                linker
                    .instance(&import)
                    .and_then(|mut instance| {
                        instance.func_new(host.func, move |_, _, _, results| {
                            results[0] = answer();
                            Ok(())
                        })
                    })
                    .expect("define a host function for initialization");
            }
        }
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
        let (_, index) = self
            .instance
            .get_export(&mut *self.store, Some(&parent), func)
            .expect("wizer's accessor function");
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
