//! Who may do what, end to end: the engine as a child process with tokens, OIDC and the shipped
//! Rego policy configured, requests over real HTTP, decisions checked in the answers, on the
//! events stream and in the audit log.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use e2e::harness::{WAIT, World, wait_for};
use engine::auth::tokens::hash;
use reqwest::{Client, RequestBuilder, Response, StatusCode, header};
use serde_json::{Value, json};

const PROBLEMS: &str = "https://muster.dev/problems/";
const ADMIN: &str = "admin-token";
const BOB: &str = "bob-token";
const EVE: &str = "eve-token";
const BILLING: &str = "billing-token";

/// Tokens for an admin, a maintainer (bob), an outsider (eve) and a publishing service.
fn tokens_config() -> String {
    let entry = |subject: &str, groups: &str, token: &str| {
        format!(
            "[[auth.tokens]]\nsubject = \"{subject}\"\ngroups = [{groups}]\nsha256 = \"{}\"\n",
            hash(token)
        )
    };
    [
        entry("root", "\"muster-admins\"", ADMIN),
        entry("bob", "", BOB),
        entry("eve", "\"developers\"", EVE),
        entry("billing", "", BILLING),
        "[[authz.publishers]]\nsubject = \"billing\"\nsources = [\"/billing/*\"]\n\
         types = [\"com.acme.billing.*\"]\n"
            .to_owned(),
    ]
    .concat()
}

/// Status and JSON body.
async fn answer(response: Response) -> anyhow::Result<(StatusCode, Value)> {
    let status = response.status();
    let bytes = response.bytes().await?;
    let value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(format!("{bytes:?}")))
    };
    Ok((status, value))
}

/// Asserts a 403 problem whose detail contains `reason`.
async fn forbidden(request: RequestBuilder, reason: &str) -> anyhow::Result<()> {
    let (status, body) = answer(request.send().await?).await?;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["type"], format!("{PROBLEMS}forbidden"), "{body}");
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(detail.contains(reason), "expected {reason:?} in {detail:?}");
    Ok(())
}

/// Asserts a success status.
async fn ok(request: RequestBuilder) -> anyhow::Result<Value> {
    let (status, body) = answer(request.send().await?).await?;
    assert!(status.is_success(), "{status}: {body}");
    Ok(body)
}

/// The header values of every event on the stream of `ce-type` `ty`.
async fn stream_events(world: &mut World, ty: &str) -> anyhow::Result<Vec<async_nats::HeaderMap>> {
    let js = world.jetstream().await?;
    let mut stream = js.get_stream("MUSTER_EVENTS").await?;
    let state = stream.info().await?.state.clone();
    let mut found = Vec::new();
    for seq in state.first_sequence..=state.last_sequence {
        let Ok(message) = stream.get_raw_message(seq).await else { continue };
        if message.headers.get("ce-type").map(|v| v.as_str()) == Some(ty) {
            found.push(message.headers);
        }
    }
    Ok(found)
}

fn team(slug: &str, maintainers: &[&str]) -> Value {
    json!({"slug": slug, "name": slug, "members": [], "maintainers": maintainers})
}

#[tokio::test]
async fn the_shipped_policy_decides_each_route() -> anyhow::Result<()> {
    let mut world = World::start().await?;
    world.use_config(&tokens_config())?;
    let mut engine = world.start_engine().await?;
    let api = engine.api.clone();
    let http = Client::new();
    let as_ = |token: &str, request: RequestBuilder| request.bearer_auth(token);

    // Admins create environments and teams; nobody else does.
    let prod = json!({"name": "prod", "allow_namespace_deletion": false});
    ok(as_(ADMIN, http.post(format!("{api}/v1/environments")).json(&prod))).await?;
    let dev = json!({"name": "dev", "allow_namespace_deletion": true});
    forbidden(as_(EVE, http.post(format!("{api}/v1/environments")).json(&dev)), "admin").await?;
    ok(as_(ADMIN, http.post(format!("{api}/v1/environments")).json(&dev))).await?;
    forbidden(
        as_(BOB, http.post(format!("{api}/v1/teams")).json(&team("search", &["bob"]))),
        "admin",
    )
    .await?;
    ok(as_(ADMIN, http.post(format!("{api}/v1/teams")).json(&team("payments", &["bob"])))).await?;
    forbidden(
        as_(EVE, http.put(format!("{api}/v1/environments/dev")).json(&json!({"name": "dev"}))),
        "admin",
    )
    .await?;

    // Reading is open to any authenticated caller.
    ok(as_(EVE, http.get(format!("{api}/v1/teams/payments")))).await?;
    ok(as_(EVE, http.get(format!("{api}/v1/environments")))).await?;
    ok(as_(EVE, http.get(format!("{api}/v1/runs")))).await?;

    // A maintainer updates members, maintainers and description of their own team...
    let members = json!({"members": ["carol"], "description": "Payments"});
    let patched = ok(as_(
        BOB,
        http.patch(format!("{api}/v1/teams/payments"))
            .header(header::CONTENT_TYPE, "application/merge-patch+json")
            .json(&members),
    ))
    .await?;
    assert_eq!(patched["members"], json!(["carol"]));
    // ...but not its parent, and cannot delete it; an outsider changes nothing.
    let parent = json!({"parent": "finance"});
    forbidden(
        as_(
            BOB,
            http.patch(format!("{api}/v1/teams/payments"))
                .header(header::CONTENT_TYPE, "application/merge-patch+json")
                .json(&parent),
        ),
        "parent",
    )
    .await?;
    forbidden(
        as_(
            EVE,
            http.patch(format!("{api}/v1/teams/payments"))
                .header(header::CONTENT_TYPE, "application/merge-patch+json")
                .json(&members),
        ),
        "eve",
    )
    .await?;
    // A maintainer may ask for a sync of their team; the event names who asked.
    ok(as_(BOB, http.post(format!("{api}/v1/teams/payments/sync")))).await?;
    let syncs = stream_events(&mut world, "muster.team.sync").await?;
    assert!(
        syncs.iter().any(|h| h.get("ce-authid").map(|v| v.as_str()) == Some("bob")),
        "a sync event with ce-authid bob"
    );
    forbidden(as_(EVE, http.post(format!("{api}/v1/teams/payments/sync"))), "eve").await?;

    // Once sync_team has written the prod namespace record, deleting the team is doubly an
    // admin's call: the reasons say both.
    wait_for("payments' namespace records", WAIT, || {
        let request = as_(ADMIN, http.get(format!("{api}/v1/teams/payments/namespaces"))).send();
        async move {
            let body: Value = request.await.ok()?.json().await.ok()?;
            (body["items"].as_array()?.len() == 2).then_some(())
        }
    })
    .await?;
    forbidden(as_(BOB, http.delete(format!("{api}/v1/teams/payments"))), "prod").await?;
    forbidden(as_(BOB, http.post(format!("{api}/v1/teams/payments/purge"))), "admin").await?;
    forbidden(as_(EVE, http.post(format!("{api}/v1/dlq/1/replay"))), "admin").await?;
    ok(as_(EVE, http.get(format!("{api}/v1/dlq")))).await?;
    forbidden(as_(EVE, http.delete(format!("{api}/v1/environments/dev"))), "admin").await?;
    let deleted = ok(as_(ADMIN, http.delete(format!("{api}/v1/teams/payments")))).await?;
    assert!(deleted["deleted_at"].is_string(), "{deleted}");

    // Every decision is in the audit log, with subject, action, outcome and reasons.
    let log = engine.log();
    let audit: Vec<&str> = log.lines().filter(|l| l.contains("authorization decision")).collect();
    assert!(
        audit.iter().any(|l| l.contains("bob") && l.contains("team.update") && l.contains("deny")),
        "{}",
        audit.join("\n")
    );
    assert!(
        audit
            .iter()
            .any(|l| l.contains("root") && l.contains("team.delete") && l.contains("allow"))
    );
    engine.stop().await?;
    Ok(())
}

#[tokio::test]
async fn without_credentials_every_v1_route_answers_401() -> anyhow::Result<()> {
    let mut world = World::start().await?;
    world.use_config(&tokens_config())?;
    let mut engine = world.start_engine().await?;
    let api = engine.api.clone();
    let http = Client::new();
    let doc: Value = http.get(format!("{api}/openapi.json")).send().await?.json().await?;
    let open: BTreeSet<&str> = ["/livez", "/readyz", "/metrics", "/openapi.json"].into();
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        let url = format!("{api}{}", e2e::harness::route_path(path, "payments"));
        for method in item.as_object().expect("item").keys() {
            let Ok(method) = method.to_uppercase().parse::<reqwest::Method>() else { continue };
            let response = http.request(method.clone(), &url).send().await?;
            let status = response.status();
            let challenge = response.headers().get(header::WWW_AUTHENTICATE).cloned();
            if open.contains(path.as_str()) {
                assert!(status.is_success(), "{method} {path}: {status}");
            } else if path == "/v1/webhooks/github" {
                // Its own proof: the HMAC signature, not a bearer token.
                assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}");
                assert!(challenge.is_none(), "{method} {path} must not ask for a bearer token");
            } else {
                assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}");
                let challenge = challenge.expect("WWW-Authenticate");
                assert!(challenge.to_str()?.starts_with("Bearer"), "{challenge:?}");
                let body: Value = response.json().await?;
                assert_eq!(body["type"], format!("{PROBLEMS}unauthorized"));
                checked += 1;
            }
            // A wrong token is refused alike.
            if path.starts_with("/v1/teams") {
                let response = http.request(method, &url).bearer_auth("nope").send().await?;
                assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{path}");
            }
        }
    }
    assert!(checked >= 20, "only {checked} routes checked");
    engine.stop().await?;
    Ok(())
}

#[tokio::test]
async fn events_from_services_are_checked_against_their_allow_list() -> anyhow::Result<()> {
    let mut world = World::start().await?;
    world.use_config(&tokens_config())?;
    let mut engine = world.start_engine().await?;
    let api = engine.api.clone();
    let http = Client::new();
    let event = |id: &str, source: &str, ty: &str| {
        json!({"specversion": "1.0", "id": id, "source": source, "type": ty,
               "datacontenttype": "application/json", "data": {"n": 1},
               "authid": "someone-else"})
    };
    let publish = |token: &str, body: Value| {
        http.post(format!("{api}/v1/events"))
            .bearer_auth(token)
            .header(header::CONTENT_TYPE, "application/cloudevents+json")
            .json(&body)
    };
    ok(publish(BILLING, event("i-1", "/billing/eu", "com.acme.billing.invoiced"))).await?;
    forbidden(publish(BILLING, event("i-2", "/shop/eu", "com.acme.billing.invoiced")), "billing")
        .await?;
    forbidden(publish(BILLING, event("i-3", "/billing/eu", "com.acme.shop.sold")), "billing")
        .await?;
    forbidden(publish(EVE, event("i-4", "/billing/eu", "com.acme.billing.invoiced")), "eve")
        .await?;
    // Muster's own types need an admin, whoever is on the allow-list.
    let sync = json!({"specversion": "1.0", "id": "s-1", "source": "/billing/eu",
                      "type": "muster.team.sync", "subject": "payments",
                      "data": {"slug": "payments", "allow_mass_removal": true}});
    forbidden(publish(BILLING, sync.clone()), "admin").await?;
    let forged = event("g-1", "/billing/eu", "com.github.membership");
    forbidden(publish(BILLING, forged), "admin").await?;
    ok(publish(ADMIN, sync)).await?;

    // Only the allowed events reached the stream, each naming who sent it (not who it claims).
    let invoiced = stream_events(&mut world, "com.acme.billing.invoiced").await?;
    assert_eq!(invoiced.len(), 1);
    assert_eq!(invoiced[0].get("ce-authid").map(|v| v.as_str()), Some("billing"));
    assert!(stream_events(&mut world, "com.acme.shop.sold").await?.is_empty());
    assert!(stream_events(&mut world, "com.github.membership").await?.is_empty());
    let syncs = stream_events(&mut world, "muster.team.sync").await?;
    assert_eq!(syncs.len(), 1);
    assert_eq!(syncs[0].get("ce-authid").map(|v| v.as_str()), Some("root"));
    engine.stop().await?;
    Ok(())
}

#[tokio::test]
async fn engine_run_refuses_a_public_address_without_authentication() -> anyhow::Result<()> {
    let mut world = World::start().await?;
    let data_dir = world.data_dir();
    let port = e2e::harness::free_port()?;
    let mut engine = world.spawn_engine_at(&data_dir, &format!("0.0.0.0:{port}"))?;
    let status = engine.wait_exit(WAIT).await?;
    assert!(!status.success());
    let log = engine.log();
    assert!(log.contains("refusing to serve the API on 0.0.0.0"), "{log}");
    assert!(log.contains("auth.mode"), "{log}");

    // Saying so explicitly is allowed.
    world.set("MUSTER_AUTH__MODE", "none");
    let mut engine = world.spawn_engine_at(&data_dir, &format!("0.0.0.0:{port}"))?;
    let http = Client::new();
    let url = format!("http://127.0.0.1:{port}/v1/teams");
    wait_for("the engine to serve", WAIT, || {
        let request = http.get(&url).send();
        async move { request.await.ok().filter(|r| r.status().is_success()).map(|_| ()) }
    })
    .await?;
    engine.stop().await?;
    Ok(())
}

/// A JWKS endpoint that counts its requests and can switch to another key set.
struct Jwks {
    url: String,
    hits: Arc<AtomicUsize>,
    rotated: Arc<std::sync::atomic::AtomicBool>,
}

async fn serve_jwks() -> anyhow::Result<Jwks> {
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/../engine/tests/fixtures/oidc");
    let first = std::fs::read_to_string(format!("{fixtures}/jwks.json"))?;
    let second = std::fs::read_to_string(format!("{fixtures}/jwks-rotated.json"))?;
    let hits = Arc::new(AtomicUsize::new(0));
    let rotated = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (h, r) = (hits.clone(), rotated.clone());
    let app = axum::Router::new().route(
        "/jwks.json",
        axum::routing::get(move || {
            h.fetch_add(1, Ordering::SeqCst);
            let body = if r.load(Ordering::SeqCst) { second.clone() } else { first.clone() };
            async move { ([(header::CONTENT_TYPE, "application/json")], body) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/jwks.json", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(Jwks { url, hits, rotated })
}

/// A token signed with a fixture key.
fn jwt(alg: jsonwebtoken::Algorithm, kid: &str, key_file: &str, claims: &Value) -> String {
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/../engine/tests/fixtures/oidc");
    let pem = std::fs::read(format!("{fixtures}/{key_file}")).expect("fixture key");
    let key = match alg {
        jsonwebtoken::Algorithm::ES256 => jsonwebtoken::EncodingKey::from_ec_pem(&pem),
        _ => jsonwebtoken::EncodingKey::from_rsa_pem(&pem),
    }
    .expect("fixture key parses");
    let mut header = jsonwebtoken::Header::new(alg);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, &key).expect("signs")
}

fn claims(iss: &str, aud: &str, exp_from_now: i64) -> Value {
    let now = chrono::Utc::now().timestamp();
    json!({"iss": iss, "aud": aud, "sub": "dana", "groups": ["muster-admins"],
           "iat": now, "exp": now + exp_from_now})
}

#[tokio::test]
async fn oidc_tokens_are_verified_against_the_jwks() -> anyhow::Result<()> {
    use jsonwebtoken::Algorithm::{ES256, RS256};
    let jwks = serve_jwks().await?;
    let mut world = World::start().await?;
    world.use_config(&format!(
        "[auth.oidc]\nissuer = \"https://id.example\"\naudience = \"muster\"\n\
         algorithms = [\"RS256\", \"ES256\"]\njwks-url = \"{}\"\nleeway = \"5s\"\n\
         refresh-interval = \"1h\"\n",
        jwks.url
    ))?;
    let mut engine = world.start_engine().await?;
    let api = engine.api.clone();
    let http = Client::new();
    let status = |token: String| {
        let request = http.get(format!("{api}/v1/teams")).bearer_auth(token).send();
        async move { request.await.map(|r| r.status()) }
    };
    let good = claims("https://id.example", "muster", 300);
    assert_eq!(status(jwt(RS256, "rsa-1", "rsa.pem", &good)).await?, StatusCode::OK);
    assert_eq!(status(jwt(ES256, "ec-1", "ec.pem", &good)).await?, StatusCode::OK);
    // An admin by the groups claim: creating an environment is allowed.
    let created = http
        .post(format!("{api}/v1/environments"))
        .bearer_auth(jwt(RS256, "rsa-1", "rsa.pem", &good))
        .json(&json!({"name": "dev"}))
        .send()
        .await?;
    assert_eq!(created.status(), StatusCode::CREATED);

    let refused = [
        ("expired", jwt(RS256, "rsa-1", "rsa.pem", &claims("https://id.example", "muster", -60))),
        ("wrong issuer", jwt(RS256, "rsa-1", "rsa.pem", &claims("https://evil", "muster", 300))),
        ("wrong audience", jwt(RS256, "rsa-1", "rsa.pem", &claims("https://id.example", "x", 300))),
        ("alg none", unsigned(&good)),
        ("badly signed", {
            let token = jwt(RS256, "rsa-1", "rsa.pem", &good);
            let (rest, _) = token.rsplit_once('.').expect("three parts");
            let other =
                jwt(RS256, "rsa-1", "rsa.pem", &claims("https://id.example", "muster", 301));
            format!("{rest}.{}", other.rsplit_once('.').expect("three parts").1)
        }),
    ];
    for (what, token) in refused {
        let response = http.get(format!("{api}/v1/teams")).bearer_auth(token).send().await?;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{what}");
        assert!(response.headers().contains_key(header::WWW_AUTHENTICATE), "{what}");
    }

    // The key set was read once. An unknown key id makes it read again, once: a second
    // unknown id within the refresh interval does not.
    let before = jwks.hits.load(Ordering::SeqCst);
    assert!(before >= 1);
    jwks.rotated.store(true, Ordering::SeqCst);
    let rotated = jwt(RS256, "rsa-2", "rsa2.pem", &good);
    assert_eq!(status(rotated).await?, StatusCode::OK, "the rotated key is fetched and accepted");
    assert_eq!(jwks.hits.load(Ordering::SeqCst), before + 1);
    let unknown = jwt(RS256, "rsa-9", "rsa2.pem", &good);
    assert_eq!(status(unknown).await?, StatusCode::UNAUTHORIZED);
    assert_eq!(jwks.hits.load(Ordering::SeqCst), before + 1, "rate-limited refresh");
    engine.stop().await?;
    Ok(())
}

/// `alg: none`, no signature.
fn unsigned(claims: &Value) -> String {
    use base64_url as b64;
    format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(serde_json::to_string(claims).expect("json").as_bytes())
    )
}

/// Unpadded base64url.
fn base64_url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

#[tokio::test]
async fn an_unreachable_remote_opa_denies_within_its_timeout() -> anyhow::Result<()> {
    let mut world = World::start().await?;
    let closed = e2e::harness::free_port()?;
    world.use_config(&format!(
        "{}[authz.opa]\nurl = \"http://127.0.0.1:{closed}\"\ntimeout = \"300ms\"\n",
        tokens_config()
    ))?;
    let mut engine = world.start_engine().await?;
    let api = engine.api.clone();
    let http = Client::new();
    let started = Instant::now();
    let response = http
        .post(format!("{api}/v1/environments"))
        .bearer_auth(ADMIN)
        .json(&json!({"name": "dev"}))
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::FORBIDDEN, "fail closed");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    let body: Value = response.json().await?;
    assert!(body["detail"].as_str().unwrap_or_default().contains("OPA"), "{body}");
    // Nothing was written: with authentication off for a moment, the record is not there.
    engine.stop().await?;
    world.use_config("")?;
    let mut engine = world.start_engine().await?;
    let response = http.get(format!("{}/v1/environments/dev", engine.api)).send().await?;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    engine.stop().await?;
    Ok(())
}

#[tokio::test]
async fn engine_dev_generates_a_token_the_cli_finds() -> anyhow::Result<()> {
    let world = World::start().await?;
    let port = e2e::harness::free_port()?;
    let api = format!("http://127.0.0.1:{port}");
    let log = world.dir.path().join("dev.log");
    let mut dev = world.spawn_command(
        &["dev", "--nats-port", "0", "--http", &format!("127.0.0.1:{port}")],
        &[],
        &log,
    )?;
    let token_file = world.data_dir().join("dev-token");
    let http = Client::new();
    let token = wait_for("engine dev to serve and write its token", WAIT, || {
        let token = std::fs::read_to_string(&token_file).ok();
        let request = http.get(format!("{api}/readyz")).send();
        async move {
            request.await.ok().filter(|r| r.status().is_success())?;
            token.filter(|t| t.len() == 64)
        }
    })
    .await?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&token_file)?.permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "only its owner reads the token");
    }
    // The API asks for it...
    let response = http.get(format!("{api}/v1/teams")).send().await?;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    // ...the token is an admin's...
    let response = http
        .post(format!("{api}/v1/environments"))
        .bearer_auth(&token)
        .json(&json!({"name": "dev"}))
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::CREATED);
    // ...and the CLI finds it in the data dir, or takes another one and says what went wrong.
    let out = world.cli(&["envs", "list", "--api", &api]).await?;
    assert!(out.contains("dev"), "{out}");
    let err = world.cli(&["envs", "list", "--api", &api, "--token", "wrong"]).await.unwrap_err();
    let err = format!("{err:#}");
    assert!(err.contains("401") && err.contains("--token"), "{err}");

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(dev.id().expect("running") as i32),
        nix::sys::signal::Signal::SIGTERM,
    )?;
    tokio::time::timeout(WAIT, dev.wait()).await??;
    assert!(!token_file.exists(), "the token goes with the engine");
    Ok(())
}

#[tokio::test]
async fn record_changes_name_who_made_them() -> anyhow::Result<()> {
    let mut world = World::start().await?;
    world.use_config(&tokens_config())?;
    let mut engine = world.start_engine().await?;
    let api = engine.api.clone();
    let http = Client::new();
    let dev = json!({"name": "dev"});
    ok(http.post(format!("{api}/v1/environments")).bearer_auth(ADMIN).json(&dev)).await?;
    let payments = team("payments", &["bob"]);
    ok(http.post(format!("{api}/v1/teams")).bearer_auth(ADMIN).json(&payments)).await?;
    ok(http
        .patch(format!("{api}/v1/teams/payments"))
        .bearer_auth(BOB)
        .header(header::CONTENT_TYPE, "application/merge-patch+json")
        .json(&json!({"description": "Payments"})))
    .await?;

    // The relay publishes the outbox in order: once the update is listed, all three are.
    let cli = &world;
    let listing = wait_for("the relay to publish muster.team.updated", WAIT, || async move {
        let out = cli.cli(&["events", "list"]).await.ok()?;
        out.contains("muster.team.updated").then_some(out)
    })
    .await?;
    let updated = listing.lines().find(|l| l.contains("muster.team.updated")).unwrap_or_default();
    assert!(listing.lines().next().unwrap_or_default().contains("BY"), "{listing}");
    assert!(updated.split_whitespace().any(|column| column == "bob"), "{listing}");

    let auth = |headers: &async_nats::HeaderMap| {
        let get = |name: &str| headers.get(name).map(|v| v.as_str().to_owned());
        (get("ce-authtype"), get("ce-authid"))
    };
    let user = |id: &str| (Some("user".to_owned()), Some(id.to_owned()));
    let created = stream_events(&mut world, "muster.environment.created").await?;
    assert_eq!(created.iter().map(auth).collect::<Vec<_>>(), [user("root")]);
    let created = stream_events(&mut world, "muster.team.created").await?;
    assert_eq!(created.iter().map(auth).collect::<Vec<_>>(), [user("root")]);
    let updated = stream_events(&mut world, "muster.team.updated").await?;
    assert_eq!(updated.iter().map(auth).collect::<Vec<_>>(), [user("bob")]);
    engine.stop().await?;
    Ok(())
}

#[tokio::test]
async fn an_agent_reads_the_records_with_its_token_and_says_when_refused() -> anyhow::Result<()> {
    use e2e::agents::{Agent, AgentSpec, wait_report_with};
    use e2e::fake_kube::FakeKube;
    const AGENT: &str = "agent-token";
    let mut world = World::start().await?;
    let agent_entry = format!(
        "[[auth.tokens]]\nsubject = \"agent-dev-kind\"\ngroups = [\"muster-agents\"]\nsha256 = \"{}\"\n",
        hash(AGENT)
    );
    world.use_config(&format!("{}{agent_entry}", tokens_config()))?;
    let mut engine = world.start_engine().await?;
    let api = engine.api.clone();
    let http = Client::new();
    let dev = json!({"name": "dev", "clusters": ["kind"], "allow_namespace_deletion": true});
    ok(http.post(format!("{api}/v1/environments")).bearer_auth(ADMIN).json(&dev)).await?;
    ok(http.post(format!("{api}/v1/teams")).bearer_auth(ADMIN).json(&team("payments", &["bob"])))
        .await?;

    let kube = FakeKube::start().await?;
    let spec = |cluster: &'static str| AgentSpec {
        nats_url: "",
        api_url: &api,
        environment: "dev",
        cluster,
        interval: Duration::from_secs(3600),
        group_prefix: "",
    };
    let nats_url = world.nats.url();
    let token_file = world.dir.path().join("agent-token");
    std::fs::write(&token_file, format!("{AGENT}\n"))?;
    let mut config = Agent::config(&spec("kind"));
    config.nats.url = Some(nats_url.clone());
    config.agent.api_token_file = Some(token_file);
    let agent = Agent::start_with(config, kube.client()).await?;
    agent.ready().await?;
    let admin = reqwest::Client::builder()
        .default_headers(
            [(header::AUTHORIZATION, format!("Bearer {ADMIN}").parse()?)].into_iter().collect(),
        )
        .build()?;
    wait_report_with(&admin, &api, "payments-dev", "kind", "applied").await?;

    // Without a token the agent is not ready, and its /readyz says why.
    let mut config = Agent::config(&spec("other"));
    config.nats.url = Some(nats_url);
    let refused = Agent::start_with(config, kube.client()).await?;
    let detail = wait_for("the refused agent to report the 401", WAIT, || async {
        let (status, body) = refused.readyz().await.ok()?;
        let text = body.to_string();
        (status == 503 && text.contains("401")).then_some(text)
    })
    .await?;
    assert!(detail.contains("no full reconcile yet"), "{detail}");
    refused.stop().await?;
    agent.stop().await?;
    engine.stop().await?;
    Ok(())
}
