//! The `confide` binary: parses the command line, installs logging, runs the command
//! and turns its outcome into an exit code (0 ok, 1 runtime failure with a one-line
//! reason on standard error, 2 usage error from clap). All behaviour lives in the
//! `confide_cli` library; this file must not grow any.

use clap::Parser;
use confide_cli::cli::{Cli, Command};
use std::process::ExitCode;
use std::sync::Mutex;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let logs = tracing_subscriber::fmt().with_env_filter(filter);
    if matches!(cli.command, Command::Chat(_)) {
        // The terminal UI owns the screen: log to a file in the profile, or nowhere.
        let file = confide_cli::commands::profile_dir(cli.profile.clone())
            .ok()
            .and_then(|dir| confide_cli::tui::log_file(&dir));
        match file {
            Some(file) => logs.with_ansi(false).with_writer(Mutex::new(file)).init(),
            None => logs.with_writer(std::io::sink).init(),
        }
    } else {
        logs.with_writer(std::io::stderr).init();
    }

    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("confide: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(confide_cli::commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // A reader that went away (`confide listen | head -1`) is not a failure.
            if err
                .downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            {
                return ExitCode::SUCCESS;
            }
            eprintln!("confide: {}", one_line(&err));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, leaving out a cause whose text the message
/// already contains (library errors often include their cause in their own message).
fn one_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line.replace('\n', " ")
}
