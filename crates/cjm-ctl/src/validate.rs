//! `cjm-ctl validate`: a manifest or a plugins.yaml, checked by the reference's rules.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::with_causes;

/// Check a manifest (JSON) or a plugins.yaml; exit 1 listing every problem.
#[derive(clap::Args)]
pub(crate) struct ValidateArgs {
    /// The manifest JSON or plugins.yaml to check.
    path: PathBuf,
    /// Override format detection (by extension: .json is a manifest, .yaml/.yml a
    /// plugins.yaml).
    #[arg(long, short = 'f', value_parser = ["manifest", "plugins_yaml"])]
    format: Option<String>,
    /// Print the outcome as one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

/// `cjm-ctl validate`: the reference's checks and exit codes (0 valid, 1 not).
pub(crate) fn run(a: &ValidateArgs) -> anyhow::Result<ExitCode> {
    use cjm_manifest::{Manifest, ManifestError, PluginsFile};
    let path = &a.path;
    let format = a
        .format
        .clone()
        .or_else(|| match path.extension().and_then(|e| e.to_str()) {
            Some("json") => Some("manifest".to_owned()),
            Some("yaml" | "yml") => Some("plugins_yaml".to_owned()),
            _ => None,
        });
    let Some(format) = format else {
        usage!(
            "cannot tell the format of {} from its extension: pass --format manifest or --format plugins_yaml",
            path.display()
        );
    };
    if !path.exists() {
        usage!(
            "{} does not exist: pass the path of a manifest (.json) or a plugins.yaml",
            path.display()
        );
    }
    let mut warnings: Vec<String> = Vec::new();
    let (kind, outcome): (&str, Result<(), ManifestError>) = if format == "manifest" {
        ("manifest", Manifest::load_validated(path).map(drop))
    } else {
        let loaded = PluginsFile::load(path);
        if let Ok(file) = &loaded {
            warnings = file.warnings.iter().map(ToString::to_string).collect();
        }
        ("plugins.yaml", loaded.map(drop))
    };
    let problems: Vec<String> = match &outcome {
        Ok(()) => Vec::new(),
        Err(e) if !e.problems().is_empty() => {
            e.problems().iter().map(ToString::to_string).collect()
        }
        Err(e) => vec![with_causes(e)],
    };
    let mut out = std::io::stdout().lock();
    if a.json {
        let doc = serde_json::json!({
            "path": path,
            "kind": kind,
            "valid": problems.is_empty(),
            "errors": problems,
            "warnings": warnings,
        });
        writeln!(out, "{doc}")?;
    } else if problems.is_empty() {
        writeln!(out, "✓ {} ({kind}): valid", path.display())?;
        for w in &warnings {
            eprintln!("warning: {w}");
        }
    } else {
        let mut err = std::io::stderr().lock();
        writeln!(
            err,
            "✗ {} ({kind}): {} error(s)",
            path.display(),
            problems.len()
        )?;
        for p in &problems {
            writeln!(err, "  - {p}")?;
        }
        if let Err(e) = &outcome
            && let Some(h) = e.hint()
        {
            writeln!(err, "hint: {h}")?;
        }
    }
    Ok(if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
