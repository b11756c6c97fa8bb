//! metrics-server (v0.9.0) flags that have no meaning for this server: accepted, so
//! metrics-server manifests and chart `args` work unchanged, and each one given is
//! named in a one-line warning at start-up. Every other metrics-server flag is
//! implemented (see `--help`); `tests/fixtures/metrics-server/v0.9.0-help.txt` is the
//! list the tests feed through the parser.

/// Whether a flag takes a value (`--name value` / `--name=value`) or is a pflag
/// boolean (`--name`, `--name=true`, `--name=false`; never a separate value).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A boolean.
    Bool,
    /// Takes a value.
    Value,
}

/// The accepted flags without effect, with why they have none here.
pub const IGNORED: &[(&str, Kind, &str)] = &[
    ("advertise-address", Kind::Value, "no peers to advertise to"),
    ("cors-allowed-origins", Kind::Value, "CORS is not served"),
    ("emulated-version", Kind::Value, "no version emulation"),
    (
        "emulation-forward-compatible",
        Kind::Bool,
        "no version emulation",
    ),
    ("external-hostname", Kind::Value, "no externalized URLs"),
    ("feature-gates", Kind::Value, "no Kubernetes feature gates"),
    ("livez-grace-period", Kind::Value, "no post-start hooks"),
    (
        "max-mutating-requests-inflight",
        Kind::Value,
        "the server is read-only (see --max-requests-inflight)",
    ),
    (
        "min-compatibility-version",
        Kind::Value,
        "no version emulation",
    ),
    (
        "min-request-timeout",
        Kind::Value,
        "watches without timeoutSeconds last 30-60 minutes",
    ),
    (
        "shutdown-send-retry-after",
        Kind::Bool,
        "the listener closes after --shutdown-delay-duration",
    ),
    (
        "shutdown-watch-termination-grace-period",
        Kind::Value,
        "watches end at once on shutdown",
    ),
    (
        "runtime-config-emulation-forward-compatible",
        Kind::Bool,
        "no version emulation",
    ),
    ("storage-initialization-timeout", Kind::Value, "no storage"),
    (
        "strict-transport-security-directives",
        Kind::Value,
        "HSTS is not sent",
    ),
    (
        "deprecated-kubelet-completely-insecure",
        Kind::Bool,
        "kubelets are always scraped over TLS",
    ),
    (
        "tls-curve-preferences",
        Kind::Value,
        "rustls chooses the key exchange",
    ),
    (
        "enable-priority-and-fairness",
        Kind::Bool,
        "one in-flight limit (--max-requests-inflight)",
    ),
    (
        "contention-profiling",
        Kind::Bool,
        "no Go block/mutex profiles (--profiling serves the CPU profile)",
    ),
    (
        "debug-socket-path",
        Kind::Value,
        "/debug/pprof/ is served on the secure port only",
    ),
    (
        "log-flush-frequency",
        Kind::Value,
        "logs are written unbuffered",
    ),
    (
        "log-json-info-buffer-size",
        Kind::Value,
        "logs are written unbuffered",
    ),
    ("log-json-split-stream", Kind::Bool, "logs go to one stream"),
    (
        "log-text-info-buffer-size",
        Kind::Value,
        "logs are written unbuffered",
    ),
    ("log-text-split-stream", Kind::Bool, "logs go to one stream"),
    ("vmodule", Kind::Value, "verbosity is global (-v)"),
];

/// The command line with the ignored flags (and their values) taken out, and one
/// warning per ignored flag given. Only the serving mode (no subcommand) is filtered.
pub fn filter_args(args: Vec<String>) -> (Vec<String>, Vec<String>) {
    let subcommand = args
        .get(1)
        .is_some_and(|a| a == "demo" || a == "kubelet-sim");
    if subcommand {
        return (args, Vec::new());
    }
    let mut kept = Vec::with_capacity(args.len());
    let mut warnings = Vec::new();
    let mut it = args.into_iter();
    if let Some(program) = it.next() {
        kept.push(program);
    }
    while let Some(arg) = it.next() {
        if arg == "--" {
            kept.push(arg);
            kept.extend(it.by_ref());
            break;
        }
        let Some(body) = arg.strip_prefix("--") else {
            kept.push(arg);
            continue;
        };
        let (name, has_value) = match body.split_once('=') {
            Some((n, _)) => (n, true),
            None => (body, false),
        };
        let Some((flag, kind, why)) = IGNORED.iter().find(|(n, _, _)| *n == name) else {
            kept.push(arg);
            continue;
        };
        if *kind == Kind::Value && !has_value {
            // `--name value`: the value is the next argument.
            it.next();
        }
        warnings.push(format!(
            "flag --{flag} is accepted for metrics-server compatibility and has no effect: {why}"
        ));
    }
    (kept, warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn ignored_flags_and_their_values_are_taken_out_with_a_warning() {
        let (kept, warnings) = filter_args(args(&[
            "bin",
            "--max-mutating-requests-inflight",
            "10",
            "--secure-port=4443",
            "--shutdown-send-retry-after=false",
            "--contention-profiling",
            "--feature-gates=A=true",
            "--cert-dir",
            "/tmp",
        ]));
        assert_eq!(
            kept,
            args(&["bin", "--secure-port=4443", "--cert-dir", "/tmp"])
        );
        assert_eq!(warnings.len(), 4);
        assert!(
            warnings[0].starts_with("flag --max-mutating-requests-inflight is accepted"),
            "{warnings:?}"
        );
    }

    /// Every flag of metrics-server v0.9.0's `--help` (the committed fixture), each
    /// boolean in its three pflag forms, parses; then all of them at once.
    #[test]
    fn every_metrics_server_v0_9_0_flag_is_accepted() {
        use crate::config::Cli;
        use clap::Parser;
        let help = include_str!("../tests/fixtures/metrics-server/v0.9.0-help.txt");
        let mut flags: Vec<(String, String)> = Vec::new();
        for line in help.lines() {
            let t = line.trim_start();
            let t = t
                .strip_prefix("-l, ")
                .or_else(|| t.strip_prefix("-v, "))
                .unwrap_or(t);
            let Some(rest) = t.strip_prefix("--") else {
                continue;
            };
            if !line.starts_with("      ") && !line.starts_with("  -") {
                continue;
            }
            let mut words = rest.split_whitespace();
            let name = words.next().unwrap().to_string();
            let ty = words.next().unwrap_or("").to_string();
            // A type word is lower-case or a known type; description words start upper-case.
            let ty = if ty.chars().next().is_some_and(|c| c.is_lowercase()) || ty == "Level" {
                ty
            } else {
                String::new()
            };
            flags.push((name, ty));
        }
        assert_eq!(flags.len(), 103, "flags in the fixture: {flags:?}");
        let sample = |name: &str, ty: &str| -> String {
            match (name, ty) {
                ("tls-min-version", _) => "VersionTLS12".into(),
                ("logging-format", _) => "json".into(),
                ("kubelet-preferred-address-types", _) => "InternalIP,Hostname".into(),
                ("metric-resolution", _) => "15s".into(),
                ("kubelet-request-timeout", _) => "5s".into(),
                ("goaway-chance", _) => "0.01".into(),
                (_, "duration") => "10s".into(),
                (_, "int" | "int32Slice" | "Level" | "float" | "float32" | "quantity") => {
                    "1".into()
                }
                (_, "ip") => "127.0.0.1".into(),
                (_, "namedCertKey") => "a.crt,a.key:*.example.com".into(),
                (_, "pattern=N,...") => "foo=2".into(),
                _ => "a,b".into(),
            }
        };
        // Flags clap requires in pairs get their partner.
        let partner = |name: &str| -> Option<&str> {
            match name {
                "kubelet-client-certificate" => Some("--kubelet-client-key=k"),
                "kubelet-client-key" => Some("--kubelet-client-certificate=c"),
                "tls-cert-file" => Some("--tls-private-key-file=k"),
                "tls-private-key-file" => Some("--tls-cert-file=c"),
                _ => None,
            }
        };
        let parse = |mut argv: Vec<String>| {
            if let Some(p) = argv
                .get(1)
                .and_then(|a| a.strip_prefix("--"))
                .map(|a| a.split('=').next().unwrap())
                .and_then(partner)
            {
                argv.push(p.to_string());
            }
            let (kept, _) = filter_args(argv.clone());
            Cli::try_parse_from(kept).map_err(|e| format!("{argv:?}: {e}"))
        };
        let mut all = vec!["bin".to_string()];
        for (name, ty) in &flags {
            if name == "version" {
                let e = parse(vec!["bin".into(), "--version".into()]).unwrap_err();
                assert!(e.contains("kubedojo-data-api"), "{e}");
                continue;
            }
            if ty.is_empty() {
                for form in [
                    format!("--{name}"),
                    format!("--{name}=true"),
                    format!("--{name}=false"),
                ] {
                    parse(vec!["bin".into(), form]).unwrap();
                }
                all.push(format!("--{name}=false"));
            } else {
                let v = sample(name, ty);
                parse(vec!["bin".into(), format!("--{name}={v}")]).unwrap();
                parse(vec!["bin".into(), format!("--{name}"), v.clone()]).unwrap();
                all.push(format!("--{name}={v}"));
            }
        }
        let cli = parse(all).unwrap();
        assert!(cli.command.is_none());
        assert!(parse(vec!["bin".into(), "--no-such-flag".into()]).is_err());
    }

    #[test]
    fn booleans_take_pflag_forms() {
        use crate::config::Cli;
        use clap::Parser;
        for (form, want) in [
            ("--kubelet-insecure-tls", true),
            ("--kubelet-insecure-tls=true", true),
            ("--kubelet-insecure-tls=false", false),
            ("--kubelet-insecure-tls=1", true),
            ("--kubelet-insecure-tls=F", false),
        ] {
            let cli = Cli::try_parse_from(["bin", form]).unwrap();
            assert_eq!(cli.serve.metrics.kubelet_insecure_tls, want, "{form}");
        }
        let cli = Cli::try_parse_from(["bin", "--kubelet-use-node-status-port", "--secure-port=1"])
            .unwrap();
        assert!(cli.serve.metrics.kubelet_use_node_status_port);
        let cli = Cli::try_parse_from(["bin", "--logging-format=json", "--disable-http2-serving"])
            .unwrap();
        assert_eq!(cli.serve.common.log_format, crate::config::LogFormat::Json);
        assert!(cli.serve.serving.disable_http2_serving);
        let e = Cli::try_parse_from(["bin", "--kubelet-insecure-tls=yes"]).unwrap_err();
        assert!(e.to_string().contains("invalid boolean"), "{e}");
        let cli = Cli::try_parse_from([
            "bin",
            "--kubelet-insecure-tls",
            "--kubelet-certificate-authority=/ca.crt",
        ])
        .unwrap();
        assert!(
            cli.serve
                .metrics
                .validate(std::time::Duration::from_secs(10))
                .is_err()
        );
    }

    /// The audit flags are implemented (src/server/audit): kept for the parser, no warning.
    #[test]
    fn audit_flags_are_not_ignored() {
        let given = args(&[
            "bin",
            "--audit-log-compress",
            "--audit-log-mode=batch",
            "--audit-log-batch-max-size",
            "10",
            "--audit-log-truncate-enabled=true",
            "--audit-webhook-config-file=/k",
            "--audit-webhook-initial-backoff=1s",
        ]);
        let (kept, warnings) = filter_args(given.clone());
        assert_eq!(kept, given);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert!(IGNORED.iter().all(|(n, _, _)| !n.starts_with("audit-")));
    }

    #[test]
    fn subcommands_are_not_filtered() {
        let a = args(&["bin", "demo", "--profiling"]);
        assert_eq!(filter_args(a.clone()), (a, Vec::new()));
    }
}
