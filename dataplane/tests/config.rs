//! The config file as a user meets it: every seed example accepted, every mistake
//! reported as `FILE:LINE:COL: key.path: message` with exit code 2.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tapwire::config;
use tapwire_store::config::{EventStoreConfig, ObjectStoreConfig, SecretSource, StartupCheck};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn tapwire(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tapwire"))
        .args(args)
        .env_remove("TAPWIRE_CONFIG")
        .env_remove("RUST_LOG")
        .output()
        .expect("run tapwire")
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Runs `check-config` on `yaml` written to a file; returns (exit code, stderr, path).
fn check(yaml: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("qpoint.yaml");
    std::fs::write(&path, yaml).unwrap();
    let out = tapwire(&["check-config", path.to_str().unwrap()]);
    assert!(out.stdout.is_empty(), "nothing on stdout for a bad config");
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stderr).unwrap(),
        path.display().to_string(),
    )
}

fn assert_error(yaml: &str, expected: &str) {
    let (code, stderr, path) = check(yaml);
    assert_eq!(stderr, format!("{path}:{expected}\n"));
    assert_eq!(code, 2, "exit code for {expected}");
}

const SEEDS: [&str; 8] = [
    "events-stdout.yaml",
    "events-pulse.yaml",
    "objects-stdout.yaml",
    "objects-s3.yaml",
    "minio.yaml",
    "aws-s3.yaml",
    "gcs.yaml",
    "complete.yaml",
];

#[test]
fn every_seed_example_passes_check_config() {
    for seed in SEEDS {
        let path = fixture(&format!("seed/{seed}"));
        let out = tapwire(&["check-config", path.to_str().unwrap()]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{seed}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.starts_with(&format!("{}: ok\n", path.display())),
            "{stdout}"
        );
    }
}

#[test]
fn check_config_masks_secrets_and_shows_stores() {
    let path = fixture("seed/complete.yaml");
    let out = tapwire(&["check-config", path.to_str().unwrap()]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains("event store `console_stdout`: stdout\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "object store `minio`: s3 endpoint=minio.internal:9000 bucket=qpoint-objects \
             region=us-east-1 insecure=false \
             access_url=https://minio.internal:9000/{{BUCKET}}/{{DIGEST}} \
             access_key=env:S3_ACCESS_KEY secret_key=env:S3_SECRET_KEY"
        ),
        "{stdout}"
    );

    let inline = "version: 2\nservices:\n  event_stores:\n    - id: p\n      type: pulse\n      \
                  url: http://pulse:8000\n      token:\n        type: text\n        value: hunter2\n";
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("q.yaml");
    std::fs::write(&file, inline).unwrap();
    let out = tapwire(&["check-config", file.to_str().unwrap()]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success());
    assert!(
        stdout.contains("endpoint=http://pulse:8000 token=text:********"),
        "{stdout}"
    );
    assert!(!stdout.contains("hunter2"), "secret leaked: {stdout}");
}

#[test]
fn seed_examples_parse_into_typed_stores() {
    let load = |name: &str| config::load_file(&fixture(&format!("seed/{name}"))).unwrap();

    let pulse = load("events-pulse.yaml");
    let [EventStoreConfig::Pulse(p)] = pulse.services.event_stores.as_slice() else {
        panic!("one pulse store: {:?}", pulse.services.event_stores)
    };
    assert_eq!(
        (p.id.as_str(), p.endpoint.as_str()),
        ("pulse", "http://pulse-service:8000")
    );
    let token = p.token.as_ref().unwrap();
    assert_eq!(
        (token.source, token.value.as_str()),
        (SecretSource::Env, "PULSE_TOKEN")
    );

    for (name, id, endpoint, bucket, region, url, key_var) in [
        (
            "objects-s3.yaml",
            "s3_store",
            "storage.example.com:9000",
            "qpoint-objects",
            "us-east-1",
            "https://storage.example.com/{{BUCKET}}/{{DIGEST}}",
            "S3_ACCESS_KEY",
        ),
        (
            "minio.yaml",
            "minio",
            "minio.example.com:9000",
            "qpoint",
            "us-east-1",
            "https://minio.example.com/{{BUCKET}}/{{DIGEST}}",
            "MINIO_ACCESS_KEY",
        ),
        (
            "aws-s3.yaml",
            "aws_s3",
            "s3.amazonaws.com",
            "my-company-qpoint",
            "us-west-2",
            "https://s3.amazonaws.com/{{BUCKET}}/{{DIGEST}}",
            "AWS_ACCESS_KEY_ID",
        ),
        (
            "gcs.yaml",
            "gcs",
            "storage.googleapis.com",
            "my-company-qpoint",
            "us-central1",
            "https://storage.cloud.google.com/{{BUCKET}}/{{DIGEST}}",
            "GCS_ACCESS_KEY",
        ),
    ] {
        let config = load(name);
        let [ObjectStoreConfig::S3(s3)] = config.services.object_stores.as_slice() else {
            panic!("{name}: one s3 store")
        };
        assert_eq!(s3.id, id);
        assert_eq!(s3.endpoint, endpoint);
        assert_eq!(s3.bucket, bucket);
        assert_eq!(s3.region, region);
        assert_eq!(s3.access_url, url);
        assert!(!s3.insecure);
        assert_eq!(s3.access_key.value, key_var);
        assert_eq!(s3.startup_check, StartupCheck::Fatal);
    }

    let complete = load("complete.yaml");
    assert_eq!(complete.services.event_stores[0].id(), "console_stdout");
    assert_eq!(complete.services.object_stores[0].id(), "minio");
}

#[test]
fn applied_tap_and_stack_settings_parse_into_the_plan() {
    let config = config::load_file(&fixture("tap-applied.yaml")).unwrap();
    assert_eq!(config.tap.direction, config::Direction::EgressExternal);
    assert!(config.tap.ignore_loopback);
    assert_eq!(
        config.tap.filters.groups,
        [config::GroupFilter::Qpoint],
        "the agent is always left out; naming it is accepted"
    );
    assert_eq!(config.http.default.name.as_deref(), Some("capture"));
    assert_eq!(
        config.http.default.capture.level,
        tapwire::plugins::Level::Full
    );
    assert_eq!(
        config.http.default.capture.format,
        tapwire::plugins::Format::Json
    );
    assert!(config.http.default.events);
}

#[test]
fn qtap_settings_not_applied_are_refused_with_their_location() {
    let stack = |plugin: &str| {
        format!("version: 2\nstacks:\n  s:\n    plugins:\n{plugin}tap:\n  http: {{stack: s}}\n")
    };
    let cases: &[(String, &str)] = &[
        (
            "version: 2\ntap:\n  audit_include_dns: true\n".into(),
            "3:22: tap.audit_include_dns: `true` needs DNS capture, which tapwire does not have",
        ),
        (
            "version: 2\ntap:\n  redis: {stack: s}\n".into(),
            "3:3: tap.redis: unknown field `redis`, expected one of `direction`, \
             `ignore_loopback`, `audit_include_dns`, `http`, `filters`, `endpoints`",
        ),
        (
            stack("      - type: logger\n"),
            "5:15: stacks.s.plugins[0].type: plugin `logger` is not applied by this version \
             of tapwire",
        ),
        (
            stack("      - type: access_logs\n        config: {mode: verbose}\n"),
            "6:24: stacks.s.plugins[0].config.mode: unknown mode `verbose`, expected one of \
             `none`, `summary`, `details`, `full`",
        ),
        (
            stack("      - type: access_logs\n        config: {format: text}\n"),
            "6:26: stacks.s.plugins[0].config.format: unknown format `text`, expected one of \
             `console`, `json`",
        ),
        (
            stack(
                "      - type: access_logs\n        config:\n          rules:\n            \
                 - {name: r, expr: http.res.status >=, mode: full}\n",
            ),
            "8:49: stacks.s.plugins[0].config.rules[0].expr: invalid expression at column 19: \
             expected a field, a value or `(`, found the end of the expression",
        ),
        (
            stack("      - type: http_metrics\n        config: {}\n"),
            "6:9: stacks.s.plugins[0].config: `http_metrics` takes no settings in tapwire",
        ),
        (
            stack("      - type: http_capturee\n"),
            "5:15: stacks.s.plugins[0].type: unknown plugin type `http_capturee`, expected one of \
             `http_capture`, `report_usage`, `http_metrics`, `access_logs`, `detect_errors`",
        ),
        (
            stack("      - type: http_capture\n        config: {level: everything}\n"),
            "6:25: stacks.s.plugins[0].config.level: unknown level `everything`, expected one of \
             `none`, `summary`, `headers`, `details`, `full`",
        ),
        (
            stack("      - type: http_capture\n        config: {level: full, format: yaml}\n"),
            "6:39: stacks.s.plugins[0].config.format: unknown format `yaml`, expected one of \
             `json`, `text`, `parts`",
        ),
        (
            stack("      - type: http_capture\n        config: {object_store: {id: out}}\n"),
            "6:37: stacks.s.plugins[0].config.object_store.id: unknown object store `out`: \
             `services.object_stores` is empty",
        ),
        (
            stack("      - type: http_capture\n        config: {object_store: {name: out}}\n"),
            "6:33: stacks.s.plugins[0].config.object_store.name: unknown field `name`, \
             expected `id`",
        ),
        (
            stack("      - type: http_capture\n      - type: http_capture\n"),
            "6:15: stacks.s.plugins[1].type: a stack takes one `http_capture` plugin",
        ),
        (
            stack(
                "      - type: http_capture\n        config:\n          rules:\n            \
                 - {name: r, expr: 'http.res.status >= 400 and', level: full}\n",
            ),
            "8:58: stacks.s.plugins[0].config.rules[0].expr: invalid expression at column 27: \
             expected a field, a value or `(`, found the end of the expression",
        ),
        (
            stack(
                "      - type: http_capture\n        config:\n          rules:\n            \
                 - name: r\n              expr: http.req.paht == \"/\"\n              level: full\n",
            ),
            "9:21: stacks.s.plugins[0].config.rules[0].expr: invalid expression at column 1: \
             unknown field `http.req.paht`",
        ),
        (
            stack(
                "      - type: http_capture\n        config:\n          rules:\n            \
                 - {name: r, expr: 'true', level: loud}\n",
            ),
            "8:46: stacks.s.plugins[0].config.rules[0].level: unknown level `loud`, expected one \
             of `none`, `summary`, `headers`, `details`, `full`",
        ),
        (
            stack(
                "      - type: http_capture\n        config:\n          rules:\n            \
                 - {name: r, exp: 'true', level: full}\n",
            ),
            "8:25: stacks.s.plugins[0].config.rules[0].exp: unknown field `exp`, expected one of \
             `name`, `expr`, `level`, `format`",
        ),
        (
            "version: 2\nrulekit:\n  macros:\n    - {name: m, expr: \"src.ip in 10.0.0.0/33\"}\n"
                .into(),
            "4:34: rulekit.macros[0].expr: invalid expression at column 11: `10.0.0.0/33` is not \
             a CIDR",
        ),
        (
            "version: 2\nrulekit:\n  macros:\n    - {name: m, expr: 'true'}\n    \
             - {name: m, expr: 'false'}\n"
                .into(),
            "5:14: rulekit.macros[1].name: macro `m` is already defined",
        ),
        (
            "version: 2\ntap:\n  endpoints:\n    - domain: '*.example.com'\n".into(),
            "4:15: tap.endpoints[0].domain: `*.example.com` is not a host name (letters, digits \
             and `-` in dot-separated labels; no wildcards)",
        ),
        (
            "version: 2\ntap:\n  endpoints:\n    - domain: a.example\n    - domain: A.example\n"
                .into(),
            "5:15: tap.endpoints[1].domain: domain `a.example` is already listed \
             (tap.endpoints[0])",
        ),
        (
            "version: 2\ntap:\n  endpoints:\n    - domain: a.example\n      http: {stack: nope}\n"
                .into(),
            "5:21: tap.endpoints[0].http.stack: unknown stack `nope`",
        ),
        (
            "version: 2\ntap:\n  direction: sideways\n".into(),
            "3:14: tap.direction: unknown variant `sideways`, expected one of `all`, `ingress`, \
             `egress`, `egress-internal`, `egress-external`",
        ),
    ];
    for (yaml, expected) in cases {
        assert_error(yaml, expected);
    }
}

#[test]
fn filter_mistakes_are_refused_with_their_location() {
    let cases = [
        (
            "version: 2\ntap:\n  filters:\n    groups: [qpoint, kubrnetes]\n",
            "4:22: tap.filters.groups[1]: unknown variant `kubrnetes`, expected one of `qpoint`, \
             `kubernetes`, `container`, `container-runtimes`, `gke`, `eks`",
        ),
        (
            "version: 2\ntap:\n  filters:\n    custom:\n      - exe: curl\n      \
             - exe: '^/usr/(bin|sbin/curl$'\n        strategy: regex\n",
            "6:14: tap.filters.custom[1].exe: not a regular expression: unclosed group",
        ),
        (
            "version: 2\ntap:\n  filters:\n    custom:\n      - exe: curl\n        only: []\n",
            "6:15: tap.filters.custom[0].only: empty list: name the layers to skip (`data`, \
             `tls`, `http`, `dns`), or leave `only` out to skip the whole process",
        ),
        (
            "version: 2\ntap:\n  filters:\n    custom:\n      - exe: curl\n        strategy: glob\n",
            "6:19: tap.filters.custom[0].strategy: unknown variant `glob`, expected one of \
             `exact`, `prefix`, `suffix`, `contains`, `regex`",
        ),
        (
            "version: 2\ntap:\n  filters:\n    custom:\n      - exe: curl\n        only: [ssl]\n",
            "6:16: tap.filters.custom[0].only[0]: unknown variant `ssl`, expected one of `data`, \
             `tls`, `http`, `dns`",
        ),
    ];
    for (yaml, expected) in cases {
        assert_error(yaml, expected);
    }
}

#[test]
fn check_config_shows_the_filters_in_match_order() {
    let out = tapwire(&[
        "check-config",
        fixture("qtap/filters.yaml").to_str().unwrap(),
    ]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let filters: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("filters"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .collect();
    assert_eq!(
        filters,
        [
            "  custom[0] exact `/usr/bin/curl` -> skip process",
            "  custom[1] prefix `/opt/monitoring/` -> skip payload",
            "  group kubernetes exact `/home/kubernetes/bin/kubelet` -> skip process",
            "  group kubernetes exact `/home/kubernetes/bin/kube-proxy` -> skip process",
            "  group kubernetes exact `/proxy-agent` -> skip process",
            "  group kubernetes exact `/cluster-proportional-autoscaler` -> skip process",
            "  group kubernetes exact `/csi-node-driver-registrar` -> skip process",
            "  group container-runtimes exact `/usr/bin/containerd` -> skip process",
            "  group container-runtimes exact `/usr/bin/dockerd` -> skip process",
            "  group container-runtimes exact `/usr/bin/runc` -> skip process",
        ],
        "{stdout}"
    );
}

#[test]
fn embedded_default_sends_events_and_objects_to_stdout() {
    let config = config::parse(config::DEFAULT_NAME, config::DEFAULT_YAML).unwrap();
    assert!(matches!(
        config.services.event_stores.as_slice(),
        [EventStoreConfig::Stdout { .. }]
    ));
    assert!(matches!(
        config.services.object_stores.as_slice(),
        [ObjectStoreConfig::Stdout { .. }]
    ));
}

#[test]
fn unknown_key() {
    assert_error(
        "version: 2\nservices:\n  object_stores:\n    - id: x\n      type: stdout\n      colour: red\n",
        "6:7: services.object_stores[0].colour: unknown field `colour`, expected one of `id`, \
         `type`, `endpoint`, `bucket`, `region`, `access_url`, `insecure`, `access_key`, \
         `secret_key`, `spool_dir`, `spool_max_bytes`, `concurrency`, \
         `multipart_threshold_bytes`, `multipart_part_bytes`, `startup_check`, \
         `session_token`, `server_side_encryption`, `kms_key_id`, `ca_file`",
    );
    assert_error(
        "version: 2\nservice:\n  event_stores: []\n",
        "2:1: service: unknown field `service`, expected one of `version`, `services`, \
         `stacks`, `tap`, `rulekit`, `tapwire`",
    );
}

#[test]
fn tapwire_section_sizes_and_durations() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("qpoint.yaml");
    std::fs::write(
        &path,
        "version: 2\ntapwire:\n  memory_budget: 64MiB\n  idle_timeout: 15m\n",
    )
    .unwrap();
    let config = tapwire::config::load_file(&path).unwrap();
    assert_eq!(
        config.tapwire.memory_budget,
        Some(tapwire::config::ByteSize(64 << 20))
    );
    assert_eq!(
        config.tapwire.idle_timeout,
        Some(tapwire::config::Seconds(900))
    );
    assert_error(
        "version: 2\ntapwire:\n  memory_budget: 64 parsecs\n",
        "3:3: tapwire.memory_budget: unknown unit `parsecs` in `64 parsecs`, expected B, KiB, \
         MiB or GiB",
    );
    assert_error(
        "version: 2\ntapwire:\n  memory_budget: 1MiB\n",
        "3:18: tapwire.memory_budget: 1048576 bytes is below the minimum of 8 MiB",
    );
    assert_error(
        "version: 2\ntapwire:\n  idle_timeout: 0\n",
        "3:17: tapwire.idle_timeout: must be at least 1s",
    );
    assert_error(
        "version: 2\ntapwire:\n  idle: 5m\n",
        "3:3: tapwire.idle: unknown field `idle`, expected `memory_budget` or `idle_timeout`",
    );
}

#[test]
fn wrong_type() {
    assert_error(
        "version: 2\nservices:\n  object_stores:\n    - id: s3\n      type: s3\n      insecure: maybe\n",
        "6:17: services.object_stores[0].insecure: invalid type: string \"maybe\", expected a boolean",
    );
    assert_error(
        "version: 2\ntap:\n  ignore_loopback: [1]\n",
        "3:20: tap.ignore_loopback: invalid type: sequence, expected a boolean",
    );
}

#[test]
fn missing_required_key() {
    assert_error(
        "version: 2\nservices:\n  event_stores:\n    - type: stdout\n",
        "4:7: services.event_stores[0]: missing field `id`",
    );
    assert_error(
        "version: 2\nservices:\n  object_stores:\n    - id: s3\n      type: s3\n      endpoint: minio:9000\n",
        "4:9: services.object_stores[0]: missing required key `bucket` for store type `s3`",
    );
    assert_error("services: {}\n", "1:1: .: missing field `version`");
}

#[test]
fn unknown_store_type() {
    assert_error(
        "version: 2\nservices:\n  event_stores:\n    - id: k\n      type: kafka\n",
        "5:13: services.event_stores[0].type: unknown variant `kafka`, expected `stdout` or `pulse`",
    );
}

#[test]
fn key_that_does_not_fit_the_store_type() {
    assert_error(
        "version: 2\nservices:\n  object_stores:\n    - id: out\n      type: stdout\n      bucket: b\n",
        "6:7: services.object_stores[0].bucket: key `bucket` is not valid for store type `stdout`",
    );
}

/// `check-config` refuses what start-up would refuse: the store kinds' own checks
/// run at load, at the offending value.
#[test]
fn values_start_up_would_refuse() {
    let s3 = "version: 2\nservices:\n  object_stores:\n    - id: s3\n      type: s3\n      \
              bucket: b\n      access_key: {type: env, value: A}\n      \
              secret_key: {type: env, value: S}\n";
    assert_error(
        &format!("{s3}      endpoint: https://minio.example.com:9000\n"),
        "9:17: services.object_stores[0].endpoint: endpoint `https://minio.example.com:9000` \
         must be a host and optional port, without scheme or path (use `insecure` to choose HTTP)",
    );
    assert_error(
        &format!("{s3}      endpoint: minio:9000\n      multipart_part_bytes: 1024\n"),
        "10:29: services.object_stores[0].multipart_part_bytes: multipart_part_bytes 1024 is \
         below S3's smallest part, 5242880 bytes (5 MiB)",
    );
    assert_error(
        &format!("{s3}      endpoint: minio:9000\n      kms_key_id: k1\n"),
        "10:19: services.object_stores[0].kms_key_id: kms_key_id applies only with \
         `server_side_encryption: aws:kms`",
    );
    assert_error(
        &format!("{s3}      endpoint: minio:9000\n      server_side_encryption: DES\n"),
        "10:31: services.object_stores[0].server_side_encryption: unknown variant `DES`, \
         expected `AES256` or `aws:kms`",
    );
    assert_error(
        &format!("{s3}      endpoint: minio:9000\n      ca_file: /nonexistent/ca.pem\n"),
        "10:16: services.object_stores[0].ca_file: cannot read `/nonexistent/ca.pem`: No such \
         file or directory (os error 2)",
    );
    assert_error(
        "version: 2\nservices:\n  event_stores:\n    - id: p\n      type: pulse\n      \
         endpoint: pulse-service:8000\n",
        "6:17: services.event_stores[0].endpoint: endpoint `pulse-service:8000` is not an \
         http:// or https:// URL",
    );
}

#[test]
fn duplicate_store_id() {
    assert_error(
        "version: 2\nservices:\n  event_stores:\n    - id: a\n      type: stdout\n    - id: a\n      type: stdout\n",
        "6:11: services.event_stores[1].id: duplicate store id `a` (already used by event_stores[0])",
    );
}

#[test]
fn unsupported_version() {
    assert_error(
        "version: 1\nservices: {}\n",
        "1:10: version: unsupported version 1, expected 2",
    );
}

#[test]
fn unknown_stack() {
    assert_error(
        "version: 2\ntap:\n  http:\n    stack: nope\n",
        "4:12: tap.http.stack: unknown stack `nope`",
    );
}

#[test]
fn unreadable_file() {
    let out = tapwire(&["check-config", "/nonexistent/qpoint.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        "/nonexistent/qpoint.yaml: cannot read config: No such file or directory (os error 2)\n"
    );
}

#[test]
fn missing_env_secret_names_store_and_variable() {
    if !is_root() {
        assert!(std::env::var_os("CI").is_none(), "CI must run this as root");
        eprintln!("skipped: the agent checks privileges before secrets; needs root");
        return;
    }
    let path = fixture("seed/objects-s3.yaml");
    let out = Command::new(env!("CARGO_BIN_EXE_tapwire"))
        .args(["--config", path.to_str().unwrap()])
        .env_remove("S3_ACCESS_KEY")
        .env("S3_SECRET_KEY", "x")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.ends_with(
            "tapwire: store `s3_store`: environment variable `S3_ACCESS_KEY` for `access_key` is not set\n"
        ),
        "{stderr}"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_tapwire"))
        .args(["--config", path.to_str().unwrap()])
        .env("S3_ACCESS_KEY", "ci")
        .env("S3_SECRET_KEY", "")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.ends_with(
            "tapwire: store `s3_store`: environment variable `S3_SECRET_KEY` for `secret_key` is empty\n"
        ),
        "{stderr}"
    );
}

#[test]
fn bad_config_starts_nothing() {
    if !is_root() {
        assert!(std::env::var_os("CI").is_none(), "CI must run this as root");
        eprintln!("skipped: the agent checks privileges before the config; needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.yaml");
    std::fs::write(&path, "version: 3\n").unwrap();
    let out = tapwire(&["--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        format!(
            "tapwire: {}:1:10: version: unsupported version 3, expected 2\n",
            path.display()
        )
    );
}

#[test]
fn unprivileged_start_names_what_is_missing() {
    if !is_root() {
        assert!(std::env::var_os("CI").is_none(), "CI must run this as root");
        eprintln!("skipped: needs root to switch to an unprivileged user");
        return;
    }
    // The binary may sit under a directory `nobody` cannot enter; run a copy.
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("tapwire");
    std::fs::copy(env!("CARGO_BIN_EXE_tapwire"), &bin).unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&bin)
        .output()
        .expect("run setpriv");
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        "tapwire: not enough privileges to load eBPF programs: run as root or grant CAP_BPF \
         and CAP_PERFMON (uid 65534, effective capabilities 0x0)\n"
    );
}

/// An `http_capture.object_store` naming no store: `check-config` and
/// start-up refuse it alike, at the id, listing the ids there are; a known id
/// shows in the plan.
#[test]
fn unknown_object_store_is_refused_by_check_config_and_start_up() {
    let yaml = "version: 2\nservices:\n  object_stores:\n    - {id: minio, type: stdout}\n    \
                - {id: console, type: stdout}\nstacks:\n  s:\n    plugins:\n      \
                - type: http_capture\n        config:\n          level: full\n          \
                object_store:\n            id: mino\ntap:\n  http: {stack: s}\n";
    let expected = "13:17: stacks.s.plugins[0].config.object_store.id: unknown object store \
                    `mino`, expected one of `minio`, `console`";
    assert_error(yaml, expected);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.yaml");
    std::fs::write(&path, yaml.replace("id: mino\n", "id: minio\n")).unwrap();
    let out = tapwire(&["check-config", path.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(
            "http: stack `s`; objects=full format=json request_events=false \
             http_metrics=false object_store=minio\n"
        ),
        "{stdout}"
    );

    if !is_root() {
        assert!(std::env::var_os("CI").is_none(), "CI must run this as root");
        eprintln!("skipped the start-up half: the agent checks privileges first; needs root");
        return;
    }
    std::fs::write(&path, yaml).unwrap();
    let out = tapwire(&["--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        format!("tapwire: {}:{expected}\n", path.display())
    );
}

/// `detect_errors` values tapwire cannot apply, each refused at its location.
#[test]
fn detect_errors_mistakes_are_refused_with_their_location() {
    let rule = |keys: &str| {
        format!(
            "version: 2\nstacks:\n  s:\n    plugins:\n      - type: detect_errors\n        \
             config:\n          rules:\n            - name: r\n{keys}tap:\n  http: {{stack: s}}\n"
        )
    };
    let cases: &[(String, &str)] = &[
        (
            rule("              trigger_status_codes: [\"5xx\", \"6xx\"]\n"),
            "9:45: stacks.s.plugins[0].config.rules[0].trigger_status_codes[1]: `6xx` is not a \
             status code: three characters, a digit 1-5 then digits or `x` (`404`, `5xx`)",
        ),
        (
            rule("              trigger_status_codes: [4044]\n"),
            "9:38: stacks.s.plugins[0].config.rules[0].trigger_status_codes[0]: `4044` is not a \
             status code: three characters, a digit 1-5 then digits or `x` (`404`, `5xx`)",
        ),
        (
            rule("              trigger_duration: 10 s\n"),
            "9:33: stacks.s.plugins[0].config.rules[0].trigger_duration: `10 s` is not a \
             duration: milliseconds (`1500`) or a number with a unit (`10s`, `250ms`, `1m30s`; \
             units `ns`, `us`, `ms`, `s`, `m`, `h`)",
        ),
        (
            rule("              trigger_duration: -5\n"),
            "9:33: stacks.s.plugins[0].config.rules[0].trigger_duration: `-5` is not a duration \
             of 0 or more milliseconds",
        ),
        (
            rule("              trigger_contains: ''\n"),
            "9:33: stacks.s.plugins[0].config.rules[0].trigger_contains: an empty \
             `trigger_contains` matches nothing (leave the key out)",
        ),
        (
            rule("              only_urls: [/login]\n"),
            "9:27: stacks.s.plugins[0].config.rules[0].only_urls[0]: `/login` is not a URL: \
             entries are whole URLs as in events (`https://api.example.com/v1/login`), compared \
             exactly",
        ),
        (
            rule("              only_categories: [app, json]\n"),
            "9:38: stacks.s.plugins[0].config.rules[0].only_categories[1]: unknown MIME category \
             `json`, expected one of `app`, `css`, `js`, `font`, `image`, `media`, `other`",
        ),
        (
            rule("              trigger_status_codes: [500]\n              with_tags: [a]\n"),
            "10:15: stacks.s.plugins[0].config.rules[0].with_tags: `with_tags` is not applied by \
             this version of tapwire (tapwire has no tags)",
        ),
        (
            rule("              trigger_status_codes: [500]\n              continue: false\n"),
            "10:15: stacks.s.plugins[0].config.rules[0].continue: `continue` is not applied by \
             this version of tapwire (Qtap does not implement it either: every rule that \
             matches fires)",
        ),
        (
            rule("              report_as_issue: true\n"),
            "8:15: stacks.s.plugins[0].config.rules[0].name: the rule has no trigger \
             (`trigger_status_codes`, `trigger_empty_body`, `trigger_duration`, \
             `trigger_contains`, `only_categories`, `only_urls`, `exclude_urls`): it would never \
             fire",
        ),
        (
            rule("              trigger_status: [500]\n"),
            "9:15: stacks.s.plugins[0].config.rules[0].trigger_status: unknown field \
             `trigger_status`, expected one of `name`, `trigger_status_codes`, \
             `trigger_empty_body`, `trigger_duration`, `trigger_contains`, `only_urls`, \
             `exclude_urls`, `report_as_issue`, `record_req_headers`, `record_req_body`, \
             `record_res_headers`, `record_res_body`, `only_categories`, `with_tags`, `continue`",
        ),
        (
            "version: 2\nstacks:\n  s:\n    plugins:\n      - type: detect_errors\n".into(),
            "5:15: stacks.s.plugins[0].type: `detect_errors` needs `rules`: without them it \
             detects nothing",
        ),
        (
            "version: 2\nstacks:\n  s:\n    plugins:\n      - type: detect_errors\n        \
             config: {rules: [{name: a, trigger_empty_body: true}]}\n      \
             - type: detect_errors\n        config: {rules: [{name: b, trigger_empty_body: true}]}\n"
                .into(),
            "7:15: stacks.s.plugins[1].type: a stack takes one `detect_errors` plugin",
        ),
    ];
    for (yaml, expected) in cases {
        assert_error(yaml, expected);
    }
    // A good rule loads, and `check-config` prints it.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("qpoint.yaml");
    std::fs::write(
        &file,
        rule(
            "              trigger_status_codes: [\"5xx\", 404]\n              \
             trigger_duration: 1500\n              report_as_issue: true\n              \
             record_res_body: true\n",
        ),
    )
    .unwrap();
    let out = tapwire(&["check-config", file.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(
            "\n    detect_errors rule `r`: status in [5xx,404] and duration >= 1.5s -> \
             issue=true record=res_body\n"
        ),
        "{stdout}"
    );
}

/// An object store's `event_store`: where its `artifact_record` events go, an
/// unknown id or key refused at its location, the choice shown by
/// `check-config`.
#[test]
fn object_store_event_store_picks_where_artifact_records_go() {
    let yaml = |event_store: &str| {
        format!(
            "version: 2\nservices:\n  event_stores:\n    - {{id: out, type: stdout}}\n  \
             object_stores:\n    - id: obj\n      type: stdout\n      event_store: {event_store}\n"
        )
    };
    assert_error(
        &yaml("{id: nowhere}"),
        "8:25: services.object_stores[0].event_store.id: unknown event store `nowhere`, \
         expected one of `out`",
    );
    assert_error(
        &yaml("{name: out}"),
        "8:7: services.object_stores[0].event_store: unknown field `name`, expected `id` or \
         `disabled`",
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.yaml");
    for (event_store, shown) in [
        (
            "{id: out}",
            "object store `obj`: stdout; artifact_record events to `out`\n",
        ),
        (
            "{disabled: true}",
            "object store `obj`: stdout; no artifact_record events\n",
        ),
    ] {
        std::fs::write(&path, yaml(event_store)).unwrap();
        let out = tapwire(&["check-config", path.to_str().unwrap()]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains(shown), "{stdout}");
    }
}

/// Qtap's configuration-page examples (`tests/fixtures/qtap/`), each marked on
/// its first line `# expect: loads` or `# expect: refused: LINE:COL: path: message`
/// (a prefix of the error after the file name).
#[test]
fn qtap_examples_load_or_are_refused_as_marked() {
    let dir = fixture("qtap");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 10, "{files:?}");
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let mark = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{} has no `# expect:` line", path.display()));
        let out = tapwire(&["check-config", path.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if mark == "loads" {
            assert_eq!(out.status.code(), Some(0), "{}: {stderr}", path.display());
        } else {
            let expected = mark.strip_prefix("refused: ").expect("loads or refused");
            assert_eq!(out.status.code(), Some(2), "{}", path.display());
            let prefix = format!("{}:{expected}", path.display());
            assert!(stderr.starts_with(&prefix), "{stderr}\nexpected {prefix}");
        }
    }
}

/// `check-config` shows the compiled stacks: each rule with its expression and
/// what it sets, and each endpoint's stack.
#[test]
fn check_config_shows_rules_and_endpoints() {
    let out = tapwire(&[
        "check-config",
        fixture("qtap/rulekit-macros.yaml").to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(
            "http: stack `default_stack`; objects=summary format=text request_events=true \
             http_metrics=false\n    \
             rule `client errors`: is_4xx() -> objects=full format=text\n    \
             rule `writes to the api`: http.req.path matches /^\\/api\\// and \
             http.req.method != \"GET\" -> objects=headers format=json\n"
        ),
        "{stdout}"
    );
    let out = tapwire(&[
        "check-config",
        fixture("qtap/endpoints.yaml").to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(
            "\n  endpoint `api.example.com`: stack `default_stack`; objects=full format=json \
             request_events=false http_metrics=false\n"
        ),
        "{stdout}"
    );
    // `debug`, Qtap's older name of `access_logs`: format `console` unless given.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("qpoint.yaml");
    std::fs::write(
        &file,
        "version: 2\nstacks:\n  s:\n    plugins:\n      - type: debug\n        \
         config: {mode: details}\ntap:\n  http: {stack: s}\n",
    )
    .unwrap();
    let out = tapwire(&["check-config", file.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(
            "http: stack `s`; objects=none format=parts request_events=false http_metrics=false\n    \
             access_logs: mode=details format=console\n"
        ),
        "{stdout}"
    );
}
