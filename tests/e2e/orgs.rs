//! Organizations on a real server: two of them, four roles in each, every
//! route class; nothing crosses (another organization's ids are 404), and
//! inside one the role table holds.

use reqwest::Method;
use reqwest::blocking::RequestBuilder;
use serde_json::{Value, json};

use crate::harness::{Kiln, error_body};

const ROLES: [&str; 4] = ["admin", "developer", "analyst", "viewer"];

/// One organization as the test set it up: a token per role and the ids
/// of what its developer made.
struct Org {
    name: String,
    tokens: Vec<(&'static str, String)>,
    user: String,
    script: String,
    execution: String,
    schedule: String,
    webhook: String,
    key_id: String,
    key: String,
    function: String,
}

impl Org {
    fn token(&self, role: &str) -> &str {
        &self.tokens.iter().find(|(r, _)| *r == role).unwrap().1
    }
}

fn created(response: reqwest::blocking::Response) -> Value {
    let status = response.status();
    let body: Value = response.json().unwrap();
    assert!(status.is_success(), "{status}: {body}");
    body
}

/// Sets up organization `name` (made by the operator unless it is the
/// default): a member per role, and a developer's script, run, schedule,
/// webhook, secret, key and HTTP function, all named alike in every
/// organization.
fn organization(kiln: &Kiln, name: &str) -> Org {
    let as_operator = |method: Method, path: &str| {
        kiln.request(method, path)
            .header("x-kiln-organization", name)
    };
    let mut tokens = Vec::new();
    let mut user = String::new();
    for role in ROLES {
        let username = format!("{name}-{role}");
        let password = format!("{username} password");
        let body = created(
            as_operator(Method::POST, "/v1/users")
                .json(&json!({"username": username, "password": password, "role": role}))
                .send()
                .unwrap(),
        );
        if role == "viewer" {
            user = body["id"].as_str().unwrap().to_owned();
        }
        let login = created(kiln.login(&username, &password));
        tokens.push((role, login["access_token"].as_str().unwrap().to_owned()));
    }
    let developer = tokens[1].1.clone();
    let dev = |method: Method, path: &str| kiln.with_token(&developer, method, path);
    let script = created(
        dev(Method::POST, "/v1/scripts")
            .json(&json!({"name": "job", "language": "javascript",
                "content": "function main(p) { return p; }"}))
            .send()
            .unwrap(),
    )["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let execution = created(
        dev(Method::POST, "/v1/scripts/job/execute?wait=true")
            .json(&json!({"parameters": {"org": name}}))
            .send()
            .unwrap(),
    )["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let schedule = created(
        dev(Method::POST, "/v1/schedules")
            .json(&json!({"name": "nightly", "script_id": "job", "cron": "@daily"}))
            .send()
            .unwrap(),
    )["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let webhook = created(
        dev(Method::POST, "/v1/webhooks")
            .json(&json!({"url": "http://127.0.0.1:9/hook", "events": ["script.created"]}))
            .send()
            .unwrap(),
    )["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let key = created(
        dev(Method::POST, "/v1/api-keys")
            .json(&json!({"name": "ci", "scopes": ["read:scripts", "execute:scripts"]}))
            .send()
            .unwrap(),
    );
    created(
        kiln.with_token(&tokens[0].1, Method::PUT, "/v1/secrets/TOKEN")
            .json(&json!({"value": format!("{name} secret"), "scripts": ["*"]}))
            .send()
            .unwrap(),
    );
    use base64::Engine as _;
    let component = std::fs::read(kiln_components::HTTP_HELLO).unwrap();
    let function = created(
        dev(Method::POST, "/v1/scripts")
            .json(&json!({"name": "web", "language": "wasm",
                "content_base64": base64::engine::general_purpose::STANDARD.encode(component)}))
            .send()
            .unwrap(),
    )["id"]
        .as_str()
        .unwrap()
        .to_owned();
    Org {
        name: name.to_owned(),
        tokens,
        user,
        script,
        execution,
        schedule,
        webhook,
        key_id: key["id"].as_str().unwrap().to_owned(),
        key: key["key"].as_str().unwrap().to_owned(),
        function,
    }
}

/// A route class: how to call it on organization `of`'s things, the
/// roles it is for, and the status those get at home.
struct Route {
    name: &'static str,
    call: fn(&Kiln, &str, &Org) -> RequestBuilder,
    roles: &'static [&'static str],
    ok: u16,
}

const ANALYSTS: &[&str] = &["admin", "developer", "analyst"];
const DEVELOPERS: &[&str] = &["admin", "developer"];
const ADMINS: &[&str] = &["admin"];
const EVERYONE: &[&str] = &ROLES;

fn routes() -> Vec<Route> {
    vec![
        Route {
            name: "read a script",
            call: |k, t, o| k.with_token(t, Method::GET, &format!("/v1/scripts/{}", o.script)),
            roles: EVERYONE,
            ok: 200,
        },
        Route {
            name: "read a script's content",
            call: |k, t, o| {
                k.with_token(t, Method::GET, &format!("/v1/scripts/{}/content", o.script))
            },
            roles: EVERYONE,
            ok: 200,
        },
        Route {
            name: "change a script",
            call: |k, t, o| {
                k.with_token(t, Method::PUT, &format!("/v1/scripts/{}", o.script))
                    .json(&json!({"description": "changed"}))
            },
            roles: DEVELOPERS,
            ok: 200,
        },
        Route {
            name: "set a script's config",
            call: |k, t, o| {
                k.with_token(t, Method::PUT, &format!("/v1/scripts/{}/config", o.script))
                    .json(&json!({"values": {"A": "1"}}))
            },
            roles: DEVELOPERS,
            ok: 200,
        },
        Route {
            name: "run a script",
            call: |k, t, o| {
                k.with_token(
                    t,
                    Method::POST,
                    &format!("/v1/scripts/{}/execute?wait=true", o.script),
                )
                .json(&json!({}))
            },
            roles: DEVELOPERS,
            ok: 200,
        },
        Route {
            name: "read an execution",
            call: |k, t, o| {
                k.with_token(t, Method::GET, &format!("/v1/executions/{}", o.execution))
            },
            roles: ANALYSTS,
            ok: 200,
        },
        Route {
            name: "stream an execution's events",
            call: |k, t, o| {
                k.with_token(
                    t,
                    Method::GET,
                    &format!("/v1/executions/{}/events", o.execution),
                )
            },
            roles: ANALYSTS,
            ok: 200,
        },
        Route {
            name: "cancel an execution",
            call: |k, t, o| {
                k.with_token(
                    t,
                    Method::POST,
                    &format!("/v1/executions/{}/cancel", o.execution),
                )
            },
            roles: DEVELOPERS,
            // Finished already: the refusal of a known execution.
            ok: 409,
        },
        Route {
            name: "read a schedule",
            call: |k, t, o| k.with_token(t, Method::GET, &format!("/v1/schedules/{}", o.schedule)),
            roles: DEVELOPERS,
            ok: 200,
        },
        Route {
            name: "change a schedule",
            call: |k, t, o| {
                k.with_token(t, Method::PUT, &format!("/v1/schedules/{}", o.schedule))
                    .json(&json!({"active": true}))
            },
            roles: DEVELOPERS,
            ok: 200,
        },
        Route {
            name: "read a webhook",
            call: |k, t, o| k.with_token(t, Method::GET, &format!("/v1/webhooks/{}", o.webhook)),
            roles: DEVELOPERS,
            ok: 200,
        },
        Route {
            name: "read a webhook's deliveries",
            call: |k, t, o| {
                k.with_token(
                    t,
                    Method::GET,
                    &format!("/v1/webhooks/{}/deliveries", o.webhook),
                )
            },
            roles: DEVELOPERS,
            ok: 200,
        },
        Route {
            name: "read a user",
            call: |k, t, o| k.with_token(t, Method::GET, &format!("/v1/users/{}", o.user)),
            roles: ADMINS,
            ok: 200,
        },
        Route {
            name: "change a user's role",
            call: |k, t, o| {
                k.with_token(t, Method::PUT, &format!("/v1/users/{}", o.user))
                    .json(&json!({"role": "viewer"}))
            },
            roles: ADMINS,
            ok: 200,
        },
        Route {
            name: "revoke an API key",
            call: |k, t, o| k.with_token(t, Method::DELETE, &format!("/v1/api-keys/{}", o.key_id)),
            // Its owner (the developer) or an admin; run last of all.
            roles: &[],
            ok: 204,
        },
    ]
}

/// The ids a listing of `path` answers, as `token` in its organization.
fn listed(kiln: &Kiln, token: &str, path: &str) -> Vec<String> {
    let body = created(kiln.with_token(token, Method::GET, path).send().unwrap());
    body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| {
            item["id"]
                .as_str()
                .or(item["name"].as_str())
                .unwrap()
                .to_owned()
        })
        .collect()
}

#[test]
fn two_organizations_four_roles_every_route_class() {
    let (kiln, _dir) = Kiln::start(&[("KILN_WEBHOOKS_ALLOW_PRIVATE", "true")]);
    // The operator (the first admin, of the default organization) makes
    // the second and joins it as an admin, to add its members.
    let acme = created(
        kiln.post("/v1/organizations")
            // Enterprise: the test's few hundred requests are within its hour.
            .json(&json!({"name": "acme", "admin": "admin", "tier": "enterprise"}))
            .send()
            .unwrap(),
    );
    assert_eq!(acme["name"], "acme");
    let orgs = [organization(&kiln, "default"), organization(&kiln, "acme")];
    assert_ne!(orgs[0].script, orgs[1].script, "one name in each");

    for (home, other) in [(&orgs[0], &orgs[1]), (&orgs[1], &orgs[0])] {
        for route in routes() {
            for role in ROLES {
                let token = home.token(role);
                let allowed = route.roles.contains(&role);
                if !route.roles.is_empty() {
                    let at_home = (route.call)(&kiln, token, home).send().unwrap();
                    let expected = if allowed { route.ok } else { 403 };
                    assert_eq!(
                        at_home.status(),
                        expected,
                        "{} as {role} of {}: {}",
                        route.name,
                        home.name,
                        at_home.text().unwrap()
                    );
                }
                // Another organization's thing: not found, for whoever may
                // do this at all; the others are refused before any lookup.
                let away = (route.call)(&kiln, token, other).send().unwrap();
                let expected = if allowed || route.roles.is_empty() {
                    404
                } else {
                    403
                };
                assert_eq!(
                    away.status(),
                    expected,
                    "{} of {} as {role} of {}: {}",
                    route.name,
                    other.name,
                    home.name,
                    away.text().unwrap()
                );
            }
        }

        // Names resolve within the caller's organization.
        let admin = home.token("admin");
        let job = created(
            kiln.with_token(admin, Method::GET, "/v1/scripts/job")
                .send()
                .unwrap(),
        );
        assert_eq!(job["id"], home.script.as_str());

        // Listings hold only the organization's own.
        let scripts = listed(&kiln, admin, "/v1/scripts");
        assert!(scripts.contains(&home.script) && !scripts.contains(&other.script));
        let executions = listed(&kiln, admin, "/v1/executions");
        assert!(executions.contains(&home.execution));
        assert!(!executions.contains(&other.execution));
        let by_script = listed(
            &kiln,
            admin,
            &format!("/v1/executions?script_id={}", other.script),
        );
        assert!(by_script.is_empty(), "{by_script:?}");
        let by_status = listed(&kiln, admin, "/v1/executions?status=completed");
        assert!(!by_status.contains(&other.execution));
        assert_eq!(
            listed(&kiln, admin, "/v1/schedules"),
            [home.schedule.as_str()]
        );
        assert_eq!(
            listed(&kiln, admin, "/v1/webhooks"),
            [home.webhook.as_str()]
        );
        assert_eq!(listed(&kiln, admin, "/v1/secrets"), ["TOKEN"]);
        let usage = created(
            kiln.with_token(admin, Method::GET, "/v1/analytics/usage?period=1d")
                .send()
                .unwrap(),
        );
        let top: Vec<&str> = usage["top_scripts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["script_id"].as_str().unwrap())
            .collect();
        assert!(top.contains(&home.script.as_str()), "{usage}");
        assert!(!top.contains(&other.script.as_str()), "{usage}");
        let users = listed(&kiln, admin, "/v1/users");
        assert!(users.contains(&home.user) && !users.contains(&other.user));
        let keys = listed(&kiln, admin, "/v1/api-keys");
        assert!(keys.contains(&home.key_id) && !keys.contains(&other.key_id));
        let audit = created(
            kiln.with_token(admin, Method::GET, "/v1/audit?size=100")
                .send()
                .unwrap(),
        );
        let entries = audit["data"].as_array().unwrap();
        assert!(!entries.is_empty());
        assert!(
            entries
                .iter()
                .all(|e| e["target"].as_str() != Some(&format!("script:{}", other.script))),
            "another organization's entry in {}'s log",
            home.name
        );

        // A key acts in its own organization; naming another is a 404.
        let by_key = kiln
            .with_key(&home.key, Method::GET, "/v1/scripts/job")
            .send()
            .unwrap();
        assert_eq!(created(by_key)["id"], home.script.as_str());
        let elsewhere = kiln
            .with_key(&home.key, Method::GET, "/v1/scripts/job")
            .header("x-kiln-organization", &other.name)
            .send()
            .unwrap();
        error_body(elsewhere, 404, "RESOURCE_NOT_FOUND");
        // So is a session naming an organization its user is no member of.
        let not_member = kiln
            .with_token(home.token("developer"), Method::GET, "/v1/scripts")
            .header("x-kiln-organization", &other.name)
            .send()
            .unwrap();
        error_body(not_member, 404, "RESOURCE_NOT_FOUND");

        // A function that is not public answers its own organization only.
        let path = if home.name == "default" {
            "/fn/web/".to_owned()
        } else {
            format!("/fn/{}:web/", home.name)
        };
        let own = kiln
            .with_token(home.token("developer"), Method::GET, &path)
            .send()
            .unwrap();
        assert_eq!(own.status(), 200, "{path}");
        let foreign = kiln
            .with_token(other.token("developer"), Method::GET, &path)
            .send()
            .unwrap();
        error_body(foreign, 404, "RESOURCE_NOT_FOUND");
        let function = created(
            kiln.with_token(home.token("viewer"), Method::GET, "/v1/scripts/web")
                .send()
                .unwrap(),
        );
        assert_eq!(function["id"], home.function.as_str());

        // Only operators manage organizations: an organization's admin is none.
        let refused = kiln
            .with_token(home.token("admin"), Method::GET, "/v1/organizations")
            .send()
            .unwrap();
        error_body(refused, 403, "PERMISSION_DENIED");
        let current = created(
            kiln.with_token(
                home.token("viewer"),
                Method::GET,
                "/v1/organizations/current",
            )
            .send()
            .unwrap(),
        );
        assert_eq!(
            (current["name"].as_str(), current["role"].as_str()),
            (Some(home.name.as_str()), Some("viewer"))
        );
    }

    // An admin's bulk delete reaches only their own organization.
    created(
        kiln.with_token(
            orgs[0].token("admin"),
            Method::DELETE,
            "/v1/executions?before=2100-01-01T00:00:00Z",
        )
        .send()
        .unwrap(),
    );
    assert!(listed(&kiln, orgs[0].token("admin"), "/v1/executions").is_empty());
    let kept = kiln
        .with_token(
            orgs[1].token("admin"),
            Method::GET,
            &format!("/v1/executions/{}", orgs[1].execution),
        )
        .send()
        .unwrap();
    assert_eq!(kept.status(), 200, "{}", kept.text().unwrap());

    // Keys: each organization's admin revokes only its own organization's.
    for (home, other) in [(&orgs[0], &orgs[1]), (&orgs[1], &orgs[0])] {
        let away = kiln
            .with_token(
                home.token("admin"),
                Method::DELETE,
                &format!("/v1/api-keys/{}", other.key_id),
            )
            .send()
            .unwrap();
        error_body(away, 404, "RESOURCE_NOT_FOUND");
    }
    for org in &orgs {
        let revoked = kiln
            .with_token(
                org.token("admin"),
                Method::DELETE,
                &format!("/v1/api-keys/{}", org.key_id),
            )
            .send()
            .unwrap();
        assert_eq!(revoked.status(), 204);
    }

    // The operator sees both, and deletes one only once it is empty.
    let all = listed(&kiln, &kiln.token, "/v1/organizations");
    assert_eq!(all.len(), 2);
    let busy = kiln
        .request(Method::DELETE, "/v1/organizations/acme")
        .send()
        .unwrap();
    let body = error_body(busy, 409, "CONFLICT");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("scripts"),
        "{body}"
    );
}

#[test]
fn a_scheduled_run_past_the_quota_is_skipped_and_recorded() {
    let (kiln, _dir) = Kiln::start(&[]);
    created(
        kiln.post("/v1/organizations")
            .json(
                &json!({"name": "capped", "admin": "admin", "tier": "custom",
                "quotas": {"executions_per_day": 1}}),
            )
            .send()
            .unwrap(),
    );
    let capped = |method: Method, path: &str| {
        kiln.request(method, path)
            .header("x-kiln-organization", "capped")
    };
    created(
        capped(Method::POST, "/v1/scripts")
            .json(&json!({"name": "tick", "language": "javascript",
                "content": "function main() { return 1; }"}))
            .send()
            .unwrap(),
    );
    created(
        capped(Method::POST, "/v1/schedules")
            .json(&json!({"name": "every-second", "script_id": "tick", "cron": "* * * * * *"}))
            .send()
            .unwrap(),
    );
    // The first run is the day's one; the next are kept, failed, saying why.
    let (ran, skipped) = crate::harness::eventually("a run and a skipped run", || {
        let page = created(
            capped(Method::GET, "/v1/executions?trigger=schedule&size=100")
                .send()
                .unwrap(),
        );
        let runs = page["data"].as_array().unwrap().clone();
        let ran = runs.iter().find(|e| e["status"] == "completed").cloned()?;
        let skipped = runs
            .iter()
            .find(|e| e["error"]["code"] == "QUOTA_EXCEEDED")
            .cloned()?;
        Some((ran, skipped))
    });
    assert_eq!(ran["trigger"], "schedule");
    assert_eq!(skipped["status"], "failed", "{skipped}");
    assert!(
        skipped["started_at"].is_null(),
        "a skipped run never started"
    );
    assert!(
        skipped["error"]["message"]
            .as_str()
            .unwrap()
            .contains("executions_per_day"),
        "{skipped}"
    );
    // Asked by hand, the same quota answers 429 with Retry-After.
    let refused = capped(Method::POST, "/v1/scripts/tick/execute?wait=true")
        .json(&json!({}))
        .send()
        .unwrap();
    assert!(refused.headers().contains_key("retry-after"));
    error_body(refused, 429, "QUOTA_EXCEEDED");
}
