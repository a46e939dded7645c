//! The web console in headless Chromium: `console/tests` (node's test
//! runner driving Debian's Chromium through playwright-core, both from
//! scripts/setup.sh) against a real server with an admin and a viewer. Its
//! screenshots of every page land in `target/console-screenshots`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::harness::{ADMIN_PASSWORD, Kiln, machine_to_myself, output_within};

fn chromium() -> PathBuf {
    let browser =
        std::env::var_os("CHROMIUM").map_or_else(|| "/usr/bin/chromium".into(), PathBuf::from);
    assert!(
        browser.exists(),
        "{} is missing: run scripts/setup.sh",
        browser.display()
    );
    browser
}

/// `node`, if it is 20 or newer (playwright-core's floor; a stock Debian 12
/// has 18, enough to build the console but not to drive a browser).
fn node() -> &'static str {
    let version = Command::new("node").arg("--version").output();
    let version = version.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    let major = version.as_deref().ok().and_then(|v| {
        v.trim_start_matches('v')
            .split('.')
            .next()?
            .parse::<u32>()
            .ok()
    });
    assert!(
        major.is_some_and(|m| m >= 20),
        "the console's tests need Node 20 or newer, found {version:?}: install it and run scripts/setup.sh"
    );
    "node"
}

#[test]
fn the_console_s_plain_modules_pass_their_unit_tests() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let ran = output_within(
        Command::new(node())
            .args(["--test", "--test-reporter=spec"])
            .args(["tests/units.test.mjs", "tests/session.test.mjs"])
            .current_dir(root.join("console"))
            .env("NO_COLOR", "1"),
        Duration::from_secs(60),
    );
    assert!(
        ran.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&ran.stdout),
        String::from_utf8_lossy(&ran.stderr)
    );
}

#[test]
fn the_console_works_in_a_real_browser() {
    // A browser takes a core of its own; the waits in the suite are about
    // what a person would see, not about timing under another test's load.
    let _machine = machine_to_myself();
    // The webhook page's test delivery goes to a closed port on 127.0.0.1.
    let (kiln, _data) = Kiln::start(&[("KILN_WEBHOOKS_ALLOW_PRIVATE", "true")]);
    kiln.create_user("viewer", "viewer");
    kiln.create_user("dev", "developer");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let shots = root.join("target/console-screenshots");
    // Only this run's pictures.
    let _ = std::fs::remove_dir_all(&shots);
    let ran = output_within(
        Command::new(node())
            .args(["--test", "--test-reporter=spec", "tests/console.test.mjs"])
            .current_dir(root.join("console"))
            .env("KILN_URL", &kiln.base)
            .env("KILN_ADMIN_PASSWORD", ADMIN_PASSWORD)
            // The harness's users have "<name> password".
            .env("KILN_VIEWER_PASSWORD", "viewer password")
            .env("KILN_DEVELOPER_PASSWORD", "dev password")
            .env("CHROMIUM", chromium())
            .env("SCREENSHOTS", &shots)
            .env("HELLO_WASM", kiln_components::HELLO)
            .env("NO_COLOR", "1"),
        Duration::from_secs(300),
    );
    assert!(
        ran.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&ran.stdout),
        String::from_utf8_lossy(&ran.stderr)
    );
    for page in [
        "01-login",
        "07-run-done",
        "13-schedules",
        "23-viewer-forbidden",
        "25-account-codes",
    ] {
        assert!(shots.join(format!("{page}.png")).exists(), "{page}.png");
    }
}
