//! The real terminal: raw mode, the alternate screen and bracketed paste, undone on
//! every way out.
//!
//! [`TerminalGuard::enter`] installs a panic hook that restores the terminal before
//! the panic message is printed, then sets the terminal up; dropping the guard (on a
//! normal exit or an error) restores it. This module must not draw or read events.

use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::cursor::Show;
use ratatui::crossterm::event::{DisableBracketedPaste, EnableBracketedPaste};
use ratatui::crossterm::execute;
use ratatui::crossterm::terminal::{
    EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode,
};
use std::io::{IsTerminal, Stdout, stdout};
use std::sync::Once;

/// The terminal the chat draws on.
pub type ChatTerminal = Terminal<CrosstermBackend<Stdout>>;

/// Whether both standard input and standard output are terminals.
#[must_use]
pub fn is_terminal() -> bool {
    std::io::stdin().is_terminal() && stdout().is_terminal()
}

/// Restores the terminal when dropped.
#[derive(Debug)]
pub struct TerminalGuard {
    _private: (),
}

impl TerminalGuard {
    /// Switches the terminal to raw mode and the alternate screen.
    ///
    /// # Errors
    /// If the terminal cannot be set up; it is restored first.
    pub fn enter() -> std::io::Result<(ChatTerminal, TerminalGuard)> {
        install_panic_hook();
        enable_raw_mode()?;
        // From here on, dropping the guard undoes whatever was done.
        let guard = TerminalGuard { _private: () };
        execute!(stdout(), EnterAlternateScreen, EnableBracketedPaste)?;
        let terminal = Terminal::new(CrosstermBackend::new(stdout()))?;
        Ok((terminal, guard))
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore();
    }
}

/// Leaves raw mode and the alternate screen and shows the cursor. Errors are ignored:
/// this runs on the way out, when nothing better can be done.
pub fn restore() {
    let _ = disable_raw_mode();
    let _ = execute!(stdout(), DisableBracketedPaste, LeaveAlternateScreen, Show);
}

/// Restores the terminal before the default panic message, so that it is readable and
/// the shell is usable afterwards.
fn install_panic_hook() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            previous(info);
        }));
    });
}
