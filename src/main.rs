//! Entry point: install the crypto provider, parse flags, run the chosen mode.

use clap::Parser;
use kubedojo_data_api::config::{Cli, Command};
use kubedojo_data_api::{demo, runtime};

/// jemalloc instead of the C library's malloc (feature `jemalloc`).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    if rustls::crypto::ring::default_provider()
        .install_default()
        .is_err()
    {
        eprintln!("error: a TLS crypto provider was already installed");
        return std::process::ExitCode::FAILURE;
    }
    // metrics-server flags without a meaning here are taken out (and warned about
    // once logging is up), so its manifests' `args` work unchanged.
    let (args, warnings) = kubedojo_data_api::compat::filter_args(std::env::args().collect());
    let cli = Cli::parse_from(args);
    match &cli.command {
        Some(Command::Demo(d)) => runtime::init_logging(&d.common),
        Some(Command::KubeletSim(k)) => {
            runtime::init_logging(&kubedojo_data_api::config::CommonArgs {
                verbosity: k.verbosity,
                ..cli.serve.common.clone()
            })
        }
        None => runtime::init_logging(&cli.serve.common),
    }
    for w in &warnings {
        tracing::warn!("{w}");
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        match cli.command {
            Some(Command::Demo(args)) => demo::run(*args).await,
            Some(Command::KubeletSim(args)) => kubedojo_data_api::sim::command::run(*args).await,
            None => runtime::run_serve(cli.serve).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
