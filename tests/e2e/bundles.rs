//! Scripts of several files, uploaded the ways a user would: a JSON map of
//! files, a zip, a tar.gz; run, read back, replaced; and what a broken
//! bundle gets.

use std::io::Write;

use serde_json::{Value, json};

use crate::harness::{Kiln, error_body};

fn zip_of(files: &[(&str, &str)]) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    let mut writer = zip::ZipWriter::new(&mut out);
    for (path, text) in files {
        writer
            .start_file(*path, zip::write::SimpleFileOptions::default())
            .unwrap();
        writer.write_all(text.as_bytes()).unwrap();
    }
    writer.finish().unwrap();
    out.into_inner()
}

fn tar_gz_of(files: &[(&str, &str)]) -> Vec<u8> {
    let encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut builder = tar::Builder::new(encoder);
    for (path, text) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(text.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder
            .append_data(&mut header, path, text.as_bytes())
            .unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap()
}

fn created(response: reqwest::blocking::Response) -> Value {
    let status = response.status();
    let body: Value = response.json().unwrap();
    assert_eq!(status, 201, "{body}");
    body
}

#[test]
fn a_javascript_bundle_from_a_json_map_runs_reads_back_and_is_replaced() {
    let (kiln, _dir) = Kiln::start(&[]);
    let files = json!({
        "main.js": "import { total } from './lib/cart.js';\nimport { fmt } from 'money';\nexport default ({ items }) => fmt(total(items));\n",
        "lib/cart.js": "import { PRICES } from './prices.js';\nexport const total = (items) => items.reduce((sum, i) => sum + PRICES[i], 0);\n",
        "lib/prices.js": "export const PRICES = { apple: 3, pear: 4 };\n",
        "node_modules/money/package.json": "{\"name\": \"money\", \"module\": \"src/index.js\"}",
        "node_modules/money/src/index.js": "export const fmt = (n) => `${n} EUR`;\n",
    });
    let script = created(
        kiln.post("/v1/scripts")
            .json(&json!({"name": "shop", "language": "javascript", "files": files}))
            .send()
            .unwrap(),
    );
    assert_eq!(script["version"], 1);
    let run = kiln.run(
        "shop",
        json!({"parameters": {"items": ["apple", "pear", "pear"]}}),
    );
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(run["result"], "11 EUR");

    // Read back as it was sent: the files and the entry found for it.
    let content = kiln.get("/v1/scripts/shop/content").send().unwrap();
    assert_eq!(
        content.headers()["content-type"],
        "application/json",
        "a bundle reads back as JSON"
    );
    let content: Value = content.json().unwrap();
    assert_eq!(content["entry"], "main.js");
    assert_eq!(content["files"], files);
    let version: Value = kiln
        .get("/v1/scripts/shop/versions/1")
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(version["entry"], "main.js");
    assert_eq!(version["files"]["lib/prices.js"], files["lib/prices.js"]);

    // A new set of files is a new version, with another entry.
    let response = kiln
        .request(reqwest::Method::PUT, "/v1/scripts/shop")
        .json(&json!({"files": {"app.mjs": "import { v } from './v.mjs';\nexport default () => v;\n", "v.mjs": "export const v = 2;\n"}, "entry": "app.mjs"}))
        .send()
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().unwrap());
    assert_eq!(kiln.run("shop", json!({}))["result"], 2);
}

#[test]
fn a_python_package_uploads_as_a_zip_or_a_tar_gz_and_runs() {
    let (kiln, _dir) = Kiln::start(&[]);
    // What zipping a folder makes: everything under one directory, and the
    // leftovers of a Mac and of Python itself.
    let files = [
        (
            "report/main.py",
            "from stats.summary import describe\nimport json\n\ndef main(values):\n    return describe(values)\n",
        ),
        ("report/stats/__init__.py", ""),
        (
            "report/stats/summary.py",
            "from .mean import mean\n\ndef describe(values):\n    return {'n': len(values), 'mean': mean(values)}\n",
        ),
        (
            "report/stats/mean.py",
            "def mean(values):\n    return sum(values) / len(values)\n",
        ),
        ("report/stats/__pycache__/mean.cpython-312.pyc", "\u{0}junk"),
        ("__MACOSX/report/._main.py", "junk"),
    ];
    let zipped = created(
        kiln.post("/v1/scripts?name=report&language=python")
            .header("content-type", "application/zip")
            .body(zip_of(&files))
            .send()
            .unwrap(),
    );
    assert_eq!(zipped["language"], "python");
    let run = kiln.run("report", json!({"parameters": {"values": [1, 2, 3, 6]}}));
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(run["result"], json!({"n": 4, "mean": 3.0}));

    // A tar.gz in multipart, with the entry named in `meta`.
    let form = reqwest::blocking::multipart::Form::new()
        .text(
            "meta",
            json!({"name": "report2", "language": "python", "entry": "main.py"}).to_string(),
        )
        .part(
            "file",
            reqwest::blocking::multipart::Part::bytes(tar_gz_of(&files[..4]))
                .file_name("report.tar.gz"),
        );
    created(kiln.post("/v1/scripts").multipart(form).send().unwrap());
    let run = kiln.run("report2", json!({"parameters": {"values": [2, 4]}}));
    assert_eq!(run["result"], json!({"n": 2, "mean": 3.0}), "{run}");
}

#[test]
fn a_broken_bundle_is_refused_with_what_is_wrong_and_nothing_is_stored() {
    let (kiln, _dir) = Kiln::start(&[]);
    let cases = [
        (
            json!({"language": "javascript", "files": {"main.js": "import { readFile } from 'fs';\nexport default () => 1;\n"}}),
            422,
            "COMPILE_ERROR",
            "a Node.js built-in",
        ),
        (
            json!({"language": "javascript", "files": {"main.js": "import x from './lib.js';\nexport default () => x;\n", "lib.js": "export default = 1;\n"}}),
            422,
            "COMPILE_ERROR",
            "(in lib.js)",
        ),
        (
            json!({"language": "python", "files": {"main.py": "from helpers import f\ndef main():\n    return f()\n", "helpers.py": "import requests\ndef f():\n    return 1\n"}}),
            422,
            "COMPILE_ERROR",
            "No module named 'requests'",
        ),
        (
            json!({"language": "python", "files": {"main.py": "def main():\n    return 1\n", "../escape.py": ""}}),
            400,
            "VALIDATION_ERROR",
            "cannot climb out",
        ),
        (
            json!({"language": "python", "files": {"a.py": "", "b.py": ""}}),
            400,
            "VALIDATION_ERROR",
            "name the file that runs",
        ),
        (
            json!({"language": "javascript", "files": {"main.js": "export default () => 1;"}, "content": "x"}),
            400,
            "VALIDATION_ERROR",
            "give one of content, content_base64 and files",
        ),
        (
            json!({"language": "wasm", "files": {"main.js": ""}}),
            400,
            "VALIDATION_ERROR",
            "a component is one file",
        ),
    ];
    for (mut body, status, code, expected) in cases {
        body["name"] = json!("broken");
        let response = kiln.post("/v1/scripts").json(&body).send().unwrap();
        let error = error_body(response, status, code);
        assert!(error.to_string().contains(expected), "{body}: {error}");
        error_body(
            kiln.get("/v1/scripts/broken").send().unwrap(),
            404,
            "RESOURCE_NOT_FOUND",
        );
    }
    // An archive that inflates past the bundle's bound is stopped there.
    let bomb = "a".repeat(6 << 20);
    let response = kiln
        .post("/v1/scripts?name=bomb&language=javascript")
        .header("content-type", "application/gzip")
        .body(tar_gz_of(&[("main.js", &bomb)]))
        .send()
        .unwrap();
    let error = error_body(response, 400, "VALIDATION_ERROR");
    assert!(
        error.to_string().contains("at most 5242880 bytes"),
        "{error}"
    );
    // Source text cannot pose as a stored bundle.
    let response = kiln
        .post("/v1/scripts")
        .json(&json!({"name": "nul", "language": "javascript", "content": "\u{0}kiln-bundle-1\n"}))
        .send()
        .unwrap();
    error_body(response, 400, "VALIDATION_ERROR");
}
