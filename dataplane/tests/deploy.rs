//! What ships for Kubernetes: the plain manifest and the Helm chart carry
//! configs the agent accepts, keep payloads off stdout by default, give the
//! agent what it needs (host PID namespace, capabilities, /sys, probes on the
//! status server), and the chart mirrors the manifest. No cluster or Helm is
//! needed: the YAML is read as a user's `kubectl`/`helm` would send it.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_yaml::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Runs `tapwire check-config` on `yaml`; returns its summary.
fn check_config(name: &str, yaml: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, yaml).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tapwire"))
        .arg("check-config")
        .arg(&path)
        .env_remove("TAPWIRE_CONFIG")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{name} is refused: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn manifest() -> Vec<Value> {
    serde_yaml::Deserializer::from_str(&read("deploy/kubernetes/tapwire.yaml"))
        .map(|doc| serde::Deserialize::deserialize(doc).unwrap())
        .filter(|v: &Value| !v.is_null())
        .collect()
}

fn kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in the manifest"))
}

#[test]
fn default_configs_are_valid_and_write_no_payloads() {
    let docs = manifest();
    let config_map = kind(&docs, "ConfigMap");
    let from_manifest = config_map["data"]["qpoint.yaml"].as_str().unwrap();
    let values: Value = serde_yaml::from_str(&read("deploy/helm/tapwire/values.yaml")).unwrap();
    let from_chart = serde_yaml::to_string(&values["config"]).unwrap();
    let from_tarball = read("deploy/config/qpoint.yaml");
    for (name, yaml) in [
        ("manifest.yaml", from_manifest),
        ("values.yaml", from_chart.as_str()),
        ("qpoint.yaml", from_tarball.as_str()),
    ] {
        let summary = check_config(name, yaml);
        assert!(
            summary.contains("event store `console_stdout`: stdout"),
            "{name}: {summary}"
        );
        assert!(
            !summary.contains("object store"),
            "{name} writes payloads somewhere by default: {summary}"
        );
    }
    let s3 = check_config("qpoint-s3.yaml", &read("deploy/config/qpoint-s3.yaml"));
    assert!(s3.contains("object store `s3_store`: s3"), "{s3}");
    let ci: Value = serde_yaml::from_str(&read("deploy/helm/tapwire/ci/s3-values.yaml")).unwrap();
    let s3 = check_config("ci.yaml", &serde_yaml::to_string(&ci["config"]).unwrap());
    assert!(s3.contains("object store `minio`: s3"), "{s3}");
}

#[test]
fn chart_takes_s3_credentials_from_a_secret_as_the_qtap_docs_show() {
    let ci: Value = serde_yaml::from_str(&read("deploy/helm/tapwire/ci/s3-values.yaml")).unwrap();
    let seed: Value = serde_yaml::from_str(
        "
extraEnv:
  - name: S3_ACCESS_KEY
    valueFrom:
      secretKeyRef:
        name: s3-credentials
        key: access-key
  - name: S3_SECRET_KEY
    valueFrom:
      secretKeyRef:
        name: s3-credentials
        key: secret-key
",
    )
    .unwrap();
    assert_eq!(ci["extraEnv"], seed["extraEnv"]);
    let template = read("deploy/helm/tapwire/templates/daemonset.yaml");
    assert!(
        template.contains("{{- with .Values.extraEnv }}"),
        "the DaemonSet template passes extraEnv through"
    );
}

#[test]
fn daemonset_has_what_the_agent_needs() {
    let docs = manifest();
    let ds = kind(&docs, "DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostPID"], true);
    let container = &pod["containers"][0];
    let env = container["env"].as_sequence().unwrap();
    let var = |name: &str| {
        env.iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("no {name}"))
    };
    assert_eq!(var("TAPWIRE_HTTPD_LISTEN")["value"], "0.0.0.0:10001");
    assert_eq!(
        var("TAPWIRE_NODE_NAME")["valueFrom"]["fieldRef"]["fieldPath"],
        "spec.nodeName"
    );
    assert_eq!(container["ports"][0]["containerPort"], 10001);
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    let security = &container["securityContext"];
    assert_eq!(security["privileged"], false);
    assert_eq!(security["capabilities"]["drop"][0], "ALL");
    let added: Vec<&str> = security["capabilities"]["add"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    for cap in [
        "BPF",
        "PERFMON",
        "SYS_ADMIN",
        "SYS_PTRACE",
        "DAC_READ_SEARCH",
    ] {
        assert!(added.contains(&cap), "{cap} missing: {added:?}");
    }
    let mounts: Vec<&str> = container["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|m| m["mountPath"].as_str().unwrap())
        .collect();
    assert!(mounts.contains(&"/sys") && mounts.contains(&"/etc/tapwire"));
    assert!(container["resources"]["limits"]["memory"].is_string());
}

#[test]
fn chart_template_mirrors_the_manifest() {
    let manifest = read("deploy/kubernetes/tapwire.yaml");
    let template = read("deploy/helm/tapwire/templates/daemonset.yaml");
    for line in [
        "hostPID: true",
        "path: /healthz",
        "path: /readyz",
        "name: TAPWIRE_HTTPD_LISTEN",
        "name: TAPWIRE_NODE_NAME",
        "name: TAPWIRE_LOG_ENCODING",
        "fieldPath: spec.nodeName",
        "- BPF",
        "- PERFMON",
        "- SYS_PTRACE",
        "- DAC_READ_SEARCH",
        "- SYS_ADMIN",
        "- ALL",
        "readOnlyRootFilesystem: true",
        "allowPrivilegeEscalation: false",
        "mountPath: /sys",
        "mountPath: /etc/tapwire",
        "mountPath: /var/lib/tapwire",
        "type: Unconfined",
    ] {
        assert!(manifest.contains(line), "manifest lacks `{line}`");
        assert!(template.contains(line), "chart template lacks `{line}`");
    }
    let monitor = read("deploy/helm/tapwire/templates/servicemonitor.yaml");
    assert!(monitor.starts_with("{{- if .Values.serviceMonitor.enabled }}"));
    assert!(monitor.contains("path: /metrics"));
}
