//! Bounds on what Cranelift is handed. Compile time and memory grow faster
//! than linearly in some shapes of code (deep nesting, thousands of live
//! locals), so a few hundred kilobytes of hostile wasm could take a minute
//! and tens of gigabytes to compile. Every module and component is walked
//! here first, in one linear pass, against limits that real programs stay
//! far below (the embedded language runtimes are tested against them).

use std::collections::HashMap;

use wasmparser::{
    ComponentInstance, FuncValidatorAllocations, Instance, Parser, Payload, ValidPayload,
    Validator, WasmFeatures,
};

use crate::error::Error;

/// The most a module or component may contain before it is compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileLimits {
    /// Bytes of one function body.
    pub function_body_bytes: u64,
    /// Locals of one function, parameters included.
    pub function_locals: u64,
    /// Blocks, loops and ifs open at once inside one function.
    pub control_depth: u64,
    /// Values on one function's operand stack at once.
    pub operand_depth: u64,
    /// Functions defined by one core module.
    pub functions: u64,
    /// Globals defined by one core module.
    pub globals: u64,
    /// Data segments of one core module.
    pub data_segments: u64,
    /// Element segments of one core module.
    pub element_segments: u64,
    /// Imports of one module or component.
    pub imports: u64,
    /// Exports of one module or component.
    pub exports: u64,
    /// Modules and components nested inside each other.
    pub nesting: u64,
    /// Core module instances made by all of a component.
    pub core_instances: u64,
    /// Component instances made by all of a component.
    pub component_instances: u64,
}

impl Default for CompileLimits {
    /// At least twice the embedded runtimes' own figures (the test
    /// `the_embedded_runtimes_are_within_the_limits` prints them; CPython's
    /// largest function is 427 KB with 273 locals and blocks 782 deep), and
    /// far below what makes a compile take minutes: a function with 1 000
    /// live locals compiles in ~0.5 s, 4 000 took 37 s.
    fn default() -> Self {
        Self {
            function_body_bytes: 1 << 20,
            function_locals: 1_000,
            control_depth: 2_000,
            operand_depth: 1_000,
            functions: 100_000,
            globals: 10_000,
            data_segments: 100_000,
            element_segments: 10_000,
            imports: 10_000,
            exports: 10_000,
            nesting: 8,
            core_instances: 32,
            component_instances: 1_000,
        }
    }
}

impl CompileLimits {
    /// The limit named as in [`Exceeded::limit`].
    fn max(&self, limit: &str) -> u64 {
        match limit {
            "function_body_bytes" => self.function_body_bytes,
            "function_locals" => self.function_locals,
            "control_depth" => self.control_depth,
            "operand_depth" => self.operand_depth,
            "functions" => self.functions,
            "globals" => self.globals,
            "data_segments" => self.data_segments,
            "element_segments" => self.element_segments,
            "imports" => self.imports,
            "exports" => self.exports,
            "nesting" => self.nesting,
            "core_instances" => self.core_instances,
            _ => self.component_instances,
        }
    }
}

/// Which limit a module passed, and by how much.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exceeded {
    /// The field of [`CompileLimits`] that was passed.
    pub limit: &'static str,
    /// What the module has.
    pub found: u64,
    /// What the limit allows.
    pub max: u64,
}

impl std::fmt::Display for Exceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "compile limit {} exceeded: {} where at most {} is allowed",
            self.limit, self.found, self.max
        )
    }
}

/// Checks `bytes` (a core module or a component) against `limits`, and
/// validates them on the way.
///
/// # Errors
///
/// [`Error::TooComplex`] naming the first limit passed; [`Error::Compile`]
/// for bytes that do not validate.
pub(crate) fn check(bytes: &[u8], limits: &CompileLimits) -> Result<(), Error> {
    walk(bytes, limits, &mut HashMap::new())
}

/// [`check`], noting the largest value seen of each limit in `seen`.
fn walk(
    bytes: &[u8],
    limits: &CompileLimits,
    seen: &mut HashMap<&'static str, u64>,
) -> Result<(), Error> {
    // Every feature: refusing what the engine does not support is the
    // engine's job, with its own messages; this pass only counts.
    let mut validator = Validator::new_with_features(WasmFeatures::all());
    let mut allocations = FuncValidatorAllocations::default();
    // Per module or component, innermost last: a component may spread one
    // kind of item over many sections.
    let mut open = vec![Counts::default()];
    let (mut core_instances, mut component_instances) = (0u64, 0u64);
    let mut at_most = |limit: &'static str, found: u64, max: u64| {
        let most = seen.entry(limit).or_insert(0);
        *most = (*most).max(found);
        if found > max {
            Err(Error::TooComplex(Exceeded { limit, found, max }))
        } else {
            Ok(())
        }
    };
    for payload in Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(invalid)?;
        if open.is_empty() {
            return Err(invalid_end(&payload));
        }
        match &payload {
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => {
                open.push(Counts::default());
                at_most("nesting", open.len() as u64 - 1, limits.nesting)?;
            }
            Payload::End(_) => {
                open.pop();
            }
            _ => {}
        }
        // Items one module or component declares, over all its sections of
        // that kind.
        let declared = open.last_mut().and_then(|counts| match &payload {
            Payload::FunctionSection(r) => Some(("functions", &mut counts.functions, r.count())),
            Payload::GlobalSection(r) => Some(("globals", &mut counts.globals, r.count())),
            Payload::DataSection(r) => {
                Some(("data_segments", &mut counts.data_segments, r.count()))
            }
            Payload::ElementSection(r) => {
                Some(("element_segments", &mut counts.element_segments, r.count()))
            }
            Payload::ImportSection(r) => Some(("imports", &mut counts.imports, r.count())),
            Payload::ComponentImportSection(r) => Some(("imports", &mut counts.imports, r.count())),
            Payload::ExportSection(r) => Some(("exports", &mut counts.exports, r.count())),
            Payload::ComponentExportSection(r) => Some(("exports", &mut counts.exports, r.count())),
            _ => None,
        });
        if let Some((limit, total, count)) = declared {
            *total += u64::from(count);
            at_most(limit, *total, limits.max(limit))?;
        }
        match &payload {
            // Instantiations only: a bag of exports is no instance at run time.
            Payload::InstanceSection(r) => {
                for instance in r.clone() {
                    if let Instance::Instantiate { .. } = instance.map_err(invalid)? {
                        core_instances += 1;
                    }
                }
                at_most("core_instances", core_instances, limits.core_instances)?;
            }
            Payload::ComponentInstanceSection(r) => {
                for instance in r.clone() {
                    if let ComponentInstance::Instantiate { .. } = instance.map_err(invalid)? {
                        component_instances += 1;
                    }
                }
                at_most(
                    "component_instances",
                    component_instances,
                    limits.component_instances,
                )?;
            }
            Payload::CodeSectionEntry(body) => {
                let size = body.range().len() as u64;
                at_most("function_body_bytes", size, limits.function_body_bytes)?;
            }
            _ => {}
        }
        if let ValidPayload::Func(function, body) = validator.payload(&payload).map_err(invalid)? {
            let mut function = function.into_validator(allocations);
            let mut reader = body.get_binary_reader();
            function.read_locals(&mut reader).map_err(invalid)?;
            // Parameters count as locals: a function may take no locals and
            // a thousand parameters.
            let locals = u64::from(function.len_locals());
            at_most("function_locals", locals, limits.function_locals)?;
            while !reader.eof() {
                let offset = reader.original_position();
                reader
                    .visit_operator(&mut function.visitor(offset))
                    .map_err(invalid)?
                    .map_err(invalid)?;
                at_most(
                    "control_depth",
                    u64::from(function.control_stack_height()),
                    limits.control_depth,
                )?;
                at_most(
                    "operand_depth",
                    u64::from(function.operand_stack_height()),
                    limits.operand_depth,
                )?;
            }
            reader
                .finish_expression(&function.visitor(reader.original_position()))
                .map_err(invalid)?;
            allocations = function.into_allocations();
        }
    }
    Ok(())
}

/// Items of one module or component so far.
#[derive(Default)]
struct Counts {
    functions: u64,
    globals: u64,
    data_segments: u64,
    element_segments: u64,
    imports: u64,
    exports: u64,
}

/// A payload after the outermost module or component ended.
fn invalid_end(payload: &Payload<'_>) -> Error {
    Error::Compile(format!("invalid WebAssembly: {payload:?} after the end"))
}

fn invalid(e: wasmparser::BinaryReaderError) -> Error {
    Error::Compile(format!("invalid WebAssembly: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module(wat: &str) -> Vec<u8> {
        wat::parse_str(wat).unwrap()
    }

    fn exceeded(bytes: &[u8], limits: &CompileLimits) -> &'static str {
        match check(bytes, limits) {
            Err(Error::TooComplex(e)) => e.limit,
            other => panic!("expected a limit, got {other:?}"),
        }
    }

    /// Limits of 3 each: small enough that a few lines of text pass them.
    fn threes() -> CompileLimits {
        CompileLimits {
            function_body_bytes: 64,
            function_locals: 3,
            control_depth: 3,
            operand_depth: 3,
            functions: 3,
            globals: 3,
            data_segments: 3,
            element_segments: 3,
            imports: 3,
            exports: 3,
            nesting: 3,
            core_instances: 3,
            component_instances: 3,
        }
    }

    fn repeat(text: &str, n: usize) -> String {
        text.repeat(n)
    }

    #[test]
    fn a_module_within_every_limit_passes() {
        let ok = module(
            r#"(module (global i32 (i32.const 0)) (memory 1) (data (i32.const 0) "x")
                (func (export "f") (param i32) (result i32)
                  (block (result i32) (i32.add (local.get 0) (i32.const 1)))))"#,
        );
        check(&ok, &threes()).unwrap();
    }

    #[test]
    fn each_function_limit_is_enforced() {
        let limits = threes();
        let body = format!("(module (func {}))", repeat("(nop)", 70));
        assert_eq!(exceeded(&module(&body), &limits), "function_body_bytes");
        let locals = "(module (func (param i32 i32) (local i32 i32)))";
        assert_eq!(exceeded(&module(locals), &limits), "function_locals");
        let nested = format!("(module (func {}{}))", repeat("(block ", 4), repeat(")", 4));
        assert_eq!(exceeded(&module(&nested), &limits), "control_depth");
        let stacked = format!(
            "(module (func {}{}))",
            repeat("i32.const 1 ", 4),
            repeat("drop ", 4)
        );
        assert_eq!(exceeded(&module(&stacked), &limits), "operand_depth");
    }

    #[test]
    fn each_module_limit_is_enforced() {
        let limits = threes();
        let cases = [
            ("functions", format!("(module {})", repeat("(func)", 4))),
            (
                "globals",
                format!("(module {})", repeat("(global i32 (i32.const 0))", 4)),
            ),
            (
                "data_segments",
                format!("(module (memory 1) {})", repeat(r#"(data "x")"#, 4)),
            ),
            (
                "element_segments",
                format!("(module (func $f) {})", repeat("(elem declare func $f)", 4)),
            ),
            (
                "imports",
                format!("(module {})", repeat(r#"(import "a" "b" (func))"#, 4)),
            ),
            (
                "exports",
                format!(
                    "(module (func $f) {})",
                    (0..4)
                        .map(|i| format!(r#"(export "e{i}" (func $f))"#))
                        .collect::<String>()
                ),
            ),
        ];
        for (limit, text) in cases {
            assert_eq!(exceeded(&module(&text), &limits), limit, "{text}");
        }
    }

    #[test]
    fn each_component_limit_is_enforced() {
        let limits = threes();
        let nested = format!("{}(component){}", repeat("(component ", 4), repeat(")", 4));
        assert_eq!(exceeded(&module(&nested), &limits), "nesting");
        let core = format!(
            "(component (core module $m) {})",
            repeat("(core instance (instantiate $m))", 4)
        );
        assert_eq!(exceeded(&module(&core), &limits), "core_instances");
        let instances = format!(
            "(component (component $c) {})",
            repeat("(instance (instantiate $c))", 4)
        );
        assert_eq!(
            exceeded(&module(&instances), &limits),
            "component_instances"
        );
        let imports = format!(
            "(component {})",
            (0..4)
                .map(|i| format!(r#"(import "i{i}" (func))"#))
                .collect::<String>()
        );
        assert_eq!(exceeded(&module(&imports), &limits), "imports");
    }

    #[test]
    fn the_compile_bomb_is_refused_quickly_at_the_default_limits() {
        // 100 000 nested blocks: took a minute and ~20 GB to compile.
        let n = 100_000;
        let bomb = module(&format!(
            "(module (func (result i32) {}i32.const 0{}))",
            repeat("(block (result i32) ", n),
            repeat(")", n)
        ));
        assert_eq!(exceeded(&bomb, &CompileLimits::default()), "control_depth");
    }

    /// The embedded runtimes are the largest real programs Kiln compiles;
    /// the defaults leave each of their figures at least 2× room.
    #[test]
    fn the_embedded_runtimes_are_within_the_limits() {
        let limits = CompileLimits::default();
        for (name, runtime) in [
            ("javascript", kiln_components::JS_RUNTIME),
            ("python", kiln_components::PY_RUNTIME),
        ] {
            let bytes = runtime.decompress().unwrap();
            let mut seen = HashMap::new();
            walk(&bytes, &limits, &mut seen).unwrap();
            let mut figures: Vec<_> = seen.into_iter().collect();
            figures.sort_unstable();
            println!("{name}: {figures:?}");
            for (limit, found) in figures {
                // Core instances per component are also the pool's hard
                // limit (32): a runtime may come closer to it.
                let room = if limit == "core_instances" { 1 } else { 2 };
                assert!(found * room <= limits.max(limit), "{name}: {limit} {found}");
            }
        }
    }

    #[test]
    fn invalid_bytes_are_a_compile_error() {
        let bad = module("(module (func (result i32)))");
        assert!(matches!(
            check(&bad, &CompileLimits::default()),
            Err(Error::Compile(_))
        ));
    }
}
