//! Lints of what ships beside the binary: the Dockerfile (hadolint), the
//! Kubernetes manifest, the Helm chart's values, `Chart.yaml` and its templates'
//! static YAML, and the example configs (yamllint, settings in `.yamllint.yaml`).
//! The tools come from PyPI into `.venv` (see `setup::ensure_lint_tools`); the
//! systemd unit is verified with the packed binary by `dist::check`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::sh;

/// Runs every linter; fails on the first finding.
pub fn deploy(root: &Path) -> Result<()> {
    let venv = root.join(".venv/bin");
    let hadolint = venv.join("hadolint");
    let yamllint = venv.join("yamllint");
    sh::run(path_str(&hadolint)?, &["Dockerfile"])?;

    let mut files: Vec<PathBuf> = vec![
        root.join("deploy/kubernetes/tapwire.yaml"),
        root.join("deploy/helm/tapwire/Chart.yaml"),
        root.join("deploy/helm/tapwire/values.yaml"),
    ];
    files.extend(yaml_files(&root.join("deploy/helm/tapwire/ci"))?);
    files.extend(yaml_files(&root.join("deploy/config"))?);
    let scratch = std::env::temp_dir().join(format!("tapwire-lint-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    for template in yaml_files(&root.join("deploy/helm/tapwire/templates"))? {
        let text = std::fs::read_to_string(&template)?;
        let out = scratch.join(template.file_name().context("template name")?);
        std::fs::write(&out, static_yaml(&text))?;
        files.push(out);
    }
    let mut args = vec!["--strict", "--config-file", ".yamllint.yaml"];
    for f in &files {
        args.push(path_str(f)?);
    }
    let result = sh::run(path_str(&yamllint)?, &args);
    std::fs::remove_dir_all(&scratch)?;
    result
}

/// A Helm template's static YAML: lines that hold only a template action (`{{-
/// if … }}`, `{{- include … | nindent 4 }}`) dropped, other actions replaced by
/// a plain scalar. No Helm can be installed here; this keeps the static part
/// linted and the templates small enough to read against the plain manifest.
pub fn static_yaml(template: &str) -> String {
    let mut out = String::new();
    for line in template.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("{{") && trimmed.ends_with("}}") && !trimmed[2..].contains("{{") {
            continue;
        }
        let mut rest = line;
        while let Some(start) = rest.find("{{") {
            out.push_str(&rest[..start]);
            match rest[start..].find("}}") {
                Some(end) => {
                    out.push_str("templated");
                    rest = &rest[start + end + 2..];
                }
                None => {
                    rest = "";
                }
            }
        }
        out.push_str(rest);
        out.push('\n');
    }
    out
}

fn yaml_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("read {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    Ok(files)
}

fn path_str(path: &Path) -> Result<&str> {
    path.to_str()
        .with_context(|| format!("not UTF-8: {}", path.display()))
}
