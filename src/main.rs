//! Entry point: install the crypto provider, parse flags, run the chosen mode.

use clap::Parser;
use kubedojo_data_api::config::{Cli, Command};
use kubedojo_data_api::{demo, runtime};

fn main() -> std::process::ExitCode {
    if rustls::crypto::ring::default_provider()
        .install_default()
        .is_err()
    {
        eprintln!("error: a TLS crypto provider was already installed");
        return std::process::ExitCode::FAILURE;
    }
    let cli = Cli::parse();
    let common = match &cli.command {
        Some(Command::Demo(d)) => d.common.clone(),
        None => cli.serve.common.clone(),
    };
    runtime::init_logging(&common);
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
            Some(Command::Demo(args)) => demo::run(args).await,
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
