//! `confide-gui`: the desktop app.

use anyhow::Context as _;
use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .try_init();
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("confide-gui: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The profile directory: `--profile DIR`, `CONFIDE_HOME`, or the user's data directory
/// (the same one the `confide` command uses).
fn profile_dir() -> anyhow::Result<PathBuf> {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        None => {}
        Some("--profile") => {
            let dir = args.next().context("--profile needs a directory")?;
            if let Some(extra) = args.next() {
                anyhow::bail!("unexpected argument {extra:?} (usage: confide-gui [--profile DIR])");
            }
            return Ok(PathBuf::from(dir));
        }
        Some("--help" | "-h") => {
            println!("usage: confide-gui [--profile DIR]");
            std::process::exit(0);
        }
        Some(other) => {
            anyhow::bail!("unknown argument {other:?} (usage: confide-gui [--profile DIR])")
        }
    }
    if let Some(home) = std::env::var_os("CONFIDE_HOME") {
        return Ok(PathBuf::from(home));
    }
    directories::ProjectDirs::from("", "", "confide")
        .map(|dirs| dirs.data_dir().to_path_buf())
        .context(
            "cannot find a home directory for the profile; pass --profile DIR or set CONFIDE_HOME",
        )
}

fn run() -> anyhow::Result<()> {
    let profile = profile_dir()?;
    let unset = |name: &str| std::env::var_os(name).is_none_or(|value| value.is_empty());
    if unset("DISPLAY") && unset("WAYLAND_DISPLAY") {
        anyhow::bail!(
            "no display: set DISPLAY (or run under Xvfb); the `confide` command works without one"
        );
    }
    let app = confide_gui::ConfideApp::new(profile).context("cannot start the client runtime")?;
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title("Confide")
            .with_inner_size([1000.0, 700.0])
            .with_min_inner_size([600.0, 400.0])
            // Files dropped on the window are sent to the open conversation.
            .with_drag_and_drop(true),
        ..Default::default()
    };
    eframe::run_native("Confide", options, Box::new(|_cc| Ok(Box::new(app))))
        .map_err(|err| anyhow::anyhow!("cannot open a window: {err}"))
}
