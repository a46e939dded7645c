//! Scripts of several files (`Source::Bundle`): JavaScript ES modules and
//! vendored packages, Python packages; what an import that resolves to
//! nothing says.

use std::sync::Arc;

use kiln_runtime::{
    Artifact, Bundle, Call, ErrorCode, Invocation, Limits, Outcome, Source, Status,
};

use super::{javascript, python, sandbox, text};

fn bundle(entry: &str, files: &[(&str, &str)]) -> Source {
    Source::Bundle(Bundle {
        entry: entry.into(),
        files: files
            .iter()
            .map(|(p, t)| ((*p).to_owned(), (*t).to_owned()))
            .collect(),
    })
}

async fn run(runtime: &Artifact, source: Source, params: &str) -> Outcome {
    let invocation = Invocation {
        call: Call::Script {
            source: Arc::new(source),
            params: params.into(),
        },
        limits: Limits::default(),
        ..Invocation::default()
    };
    sandbox().run(runtime, invocation).await.unwrap()
}

async fn check(runtime: &Artifact, source: Source) -> Option<kiln_runtime::GuestError> {
    sandbox()
        .check(runtime, &source, Limits::default())
        .await
        .unwrap()
}

#[tokio::test]
async fn javascript_modules_import_each_other_and_a_vendored_package() {
    let source = bundle(
        "src/main.js",
        &[
            (
                "src/main.js",
                "import { twice } from './lib/math.js';\n\
                 import { greet } from '../shared/greet';\n\
                 import pad from 'left-pad';\n\
                 import { label } from '@acme/labels/sub/label.js';\n\
                 export default function (p) { return { n: twice(p.n), hi: greet(p.who), pad: pad('7', 3), label: label() }; }\n",
            ),
            (
                "src/lib/math.js",
                "import { one } from './one.js';\nexport const twice = (n) => 2 * n * one;\n",
            ),
            ("src/lib/one.js", "export const one = 1;\n"),
            (
                "shared/greet/index.js",
                "export function greet(w) { return `hi ${w}`; }\n",
            ),
            (
                "node_modules/left-pad/package.json",
                r#"{"name": "left-pad", "exports": {".": {"import": "./esm/index.mjs", "require": "./cjs.js"}}}"#,
            ),
            (
                "node_modules/left-pad/esm/index.mjs",
                "export default (s, n) => s.padStart(n, '0');\n",
            ),
            (
                "node_modules/@acme/labels/sub/label.js",
                "export const label = () => 'acme';\n",
            ),
        ],
    );
    let outcome = run(
        &javascript::runtime(),
        source.clone(),
        r#"{"n": 21, "who": "kiln"}"#,
    )
    .await;
    assert_eq!(outcome.status, Status::Completed, "{outcome:?}");
    assert_eq!(
        outcome.result.as_deref(),
        Some(r#"{"n":42,"hi":"hi kiln","pad":"007","label":"acme"}"#)
    );
    // The compiled code is cached: a second run (cache hit) gives the same.
    let again = run(&javascript::runtime(), source, r#"{"n": 1, "who": "x"}"#).await;
    assert_eq!(
        again.result.as_deref(),
        Some(r#"{"n":2,"hi":"hi x","pad":"007","label":"acme"}"#)
    );
}

#[tokio::test]
async fn javascript_imports_that_resolve_to_nothing_fail_at_compile_time() {
    let runtime = javascript::runtime();
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[("main.js", "import './gone.js';\nexport default () => 1;\n")],
            "main.js imports \"./gone.js\", which is not in the bundle",
        ),
        (
            &[(
                "main.js",
                "import fs from 'node:fs';\nexport default () => 1;\n",
            )],
            "a Node.js built-in",
        ),
        (
            &[(
                "main.js",
                "import { readFile } from 'fs';\nexport default () => 1;\n",
            )],
            "a Node.js built-in",
        ),
        (
            &[(
                "main.js",
                "import _ from 'lodash';\nexport default () => 1;\n",
            )],
            "vendor it (plain ES modules) under node_modules/lodash/",
        ),
        (
            &[("main.js", "import '../up.js';\nexport default () => 1;\n")],
            "outside the bundle",
        ),
        (
            &[
                (
                    "main.js",
                    "import { x } from './lib.js';\nexport default () => x;\n",
                ),
                ("lib.js", "export const x = ;\n"),
            ],
            "(in lib.js)",
        ),
    ];
    for (files, expected) in cases {
        let error = check(&runtime, bundle("main.js", files))
            .await
            .unwrap_or_else(|| panic!("{files:?} compiled"));
        assert_eq!(error.code, ErrorCode::CompileError, "{error:?}");
        assert!(
            error.message.contains(expected),
            "{files:?}: {}",
            error.message
        );
    }
    // A name a module does not export is found when the modules are linked,
    // which QuickJS does only to run them.
    let outcome = run(
        &runtime,
        bundle(
            "main.js",
            &[
                (
                    "main.js",
                    "import { nope } from './lib.js';\nexport default () => nope;\n",
                ),
                ("lib.js", "export const x = 1;\n"),
            ],
        ),
        "{}",
    )
    .await;
    let error = outcome.error.unwrap();
    assert!(error.message.contains("nope"), "{error:?}");
}

#[tokio::test]
async fn a_classic_javascript_entry_in_a_bundle_runs_as_one_file() {
    let source = bundle(
        "main.js",
        &[
            ("main.js", "function main() { return 5; }"),
            ("unused.js", "export const x = 1;"),
        ],
    );
    let outcome = run(&javascript::runtime(), source, "{}").await;
    assert_eq!(outcome.result.as_deref(), Some("5"), "{outcome:?}");
}

#[tokio::test]
async fn a_python_package_bundle_runs_with_relative_imports() {
    let source = bundle(
        "main.py",
        &[
            (
                "main.py",
                "from shop.cart import total\nimport shop\nfrom util import fmt\n\
                 def main(items):\n    print('pkg', shop.NAME)\n    return fmt(total(items))\n",
            ),
            ("shop/__init__.py", "NAME = 'shop'\n"),
            (
                "shop/cart.py",
                "from .prices import PRICES\nfrom . import prices\n\ndef total(items):\n    assert prices.PRICES is PRICES\n    return sum(PRICES[i] for i in items)\n",
            ),
            ("shop/prices.py", "PRICES = {'apple': 3, 'pear': 4}\n"),
            ("util/fmt_impl.py", "def fmt(n):\n    return f'{n} EUR'\n"),
            ("util/__init__.py", "from util.fmt_impl import fmt\n"),
            ("README.md", "not python: ignored\n"),
        ],
    );
    let outcome = run(
        &python::runtime(),
        source,
        r#"{"items": ["apple", "pear", "pear"]}"#,
    )
    .await;
    assert_eq!(outcome.status, Status::Completed, "{outcome:?}");
    assert_eq!(outcome.result.as_deref(), Some(r#""11 EUR""#));
    assert_eq!(text(&outcome.stdout), "pkg shop\n");
}

#[tokio::test]
async fn a_python_bundle_failure_names_its_file() {
    let runtime = python::runtime();
    let error = check(
        &runtime,
        bundle(
            "main.py",
            &[
                ("main.py", "import lib\ndef main():\n    return 1\n"),
                ("lib.py", "import requests\n"),
            ],
        ),
    )
    .await
    .unwrap();
    assert_eq!(error.code, ErrorCode::CompileError);
    assert_eq!(
        error.message,
        "ModuleNotFoundError: No module named 'requests': neither the script's files nor Kiln's \
         Python runtime include it (in lib.py)"
    );
    assert_eq!(error.line, Some(1));
    let error = check(
        &runtime,
        bundle(
            "main.py",
            &[("main.py", "def main():\n    return 1\n"), ("json.py", "")],
        ),
    )
    .await
    .unwrap();
    assert!(
        error.message.contains("json.py would define 'json'"),
        "{}",
        error.message
    );
    let error = check(
        &runtime,
        bundle(
            "main.py",
            &[
                ("main.py", "def main():\n    return 1\n"),
                ("pkg/bad.py", "def f(:\n"),
            ],
        ),
    )
    .await
    .unwrap();
    assert!(
        error.message.ends_with("(in pkg/bad.py)"),
        "{}",
        error.message
    );

    // A run-time error's traceback shows the bundle's own frames.
    let outcome = run(
        &runtime,
        bundle(
            "main.py",
            &[
                (
                    "main.py",
                    "from lib import boom\ndef main():\n    return boom()\n",
                ),
                ("lib.py", "def boom():\n    raise ValueError('no')\n"),
            ],
        ),
        "{}",
    )
    .await;
    let error = outcome.error.unwrap();
    assert_eq!(error.message, "ValueError: no");
    let stack = error.stack.unwrap_or_default();
    assert!(
        stack.contains("main.py") && stack.contains("lib.py"),
        "{stack}"
    );
}
