//! Running the subcommands: connecting with the profile's session and doing one thing.
//!
//! Each submodule is one subcommand (or a family). They use the client core for all
//! network work and [`crate::output`] for all formatting; the helpers here resolve the
//! profile, the server and targets. Commands return `anyhow` errors whose messages are
//! the one-line reasons `main` prints; they must never print secrets.

mod account;
mod chat;
mod files;
mod history;
mod keys;
mod listen;
mod rooms;
mod send;

pub use chat::run_effect;

use crate::cli::{Cli, Command, DEFAULT_SERVER, TargetArgs};
use crate::output::{Line, Place, RoomDirectory};
use anyhow::Context as _;
use confide_client::{
    Auth, Client, ClientConfig, ClientError, ClientHandle, EventStream, Fingerprint, Profile,
    ServerAddress,
};
use confide_proto::RoomId;
use std::io::Write;
use std::path::PathBuf;

/// What every command needs, from the global flags.
#[derive(Debug)]
pub struct Context {
    /// The profile.
    pub profile: Profile,
    /// `--server`, if given.
    pub server: Option<ServerAddress>,
    /// `--fingerprint`, if given.
    pub fingerprint: Option<Fingerprint>,
    /// `--json`.
    pub json: bool,
}

/// Runs the command `cli` describes.
///
/// # Errors
/// Whatever made the command fail, with a message for people.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let context = Context {
        profile: Profile::open(profile_dir(cli.profile)?)?,
        server: cli.server,
        fingerprint: cli.fingerprint,
        json: cli.json,
    };
    match cli.command {
        Command::Register(args) => account::register(&context, args).await,
        Command::Login(args) => account::login(&context, args).await,
        Command::Logout => account::logout(&context).await,
        Command::Send(args) => send::send(&context, args).await,
        Command::Listen(args) => listen::listen(&context, args).await,
        Command::History(args) => history::history(&context, args).await,
        Command::Rooms => rooms::rooms(&context).await,
        Command::Users(args) => rooms::users(&context, args).await,
        Command::Room(command) => rooms::room(&context, command).await,
        Command::Chat(args) => chat::chat(&context, args).await,
        Command::Keygen(args) => keys::keygen(&args),
        Command::Verify(args) => keys::verify(&context, args).await,
        Command::SendFile(args) => files::send_file(&context, args).await,
        Command::GetFile(args) => files::get_file(&context, args).await,
        Command::DeleteFile(args) => files::delete_file(&context, args).await,
        Command::SendVoice(args) => files::send_voice(&context, args).await,
    }
}

/// The profile directory: `--profile` (or `CONFIDE_HOME`), else the user's data
/// directory.
///
/// # Errors
/// If there is no home directory to put the default in.
pub fn profile_dir(flag: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(dir) = flag {
        return Ok(dir);
    }
    directories::ProjectDirs::from("", "", "confide")
        .map(|dirs| dirs.data_dir().to_path_buf())
        .context(
            "cannot find a home directory for the profile; pass --profile DIR or set CONFIDE_HOME",
        )
}

impl Context {
    /// The server for commands that use the stored session: `--server`, else the
    /// session's.
    fn session_server(&self) -> Result<ServerAddress, ClientError> {
        if let Some(server) = &self.server {
            return Ok(server.clone());
        }
        match self.profile.session()? {
            Some(session) => Ok(session.server),
            None => Err(ClientError::NotLoggedIn),
        }
    }

    /// The server for `register` and `login`: `--server`, else the default.
    fn login_server(&self) -> anyhow::Result<ServerAddress> {
        match &self.server {
            Some(server) => Ok(server.clone()),
            None => Ok(DEFAULT_SERVER.parse()?),
        }
    }

    fn config(&self, server: ServerAddress, auth: Auth, sync: bool) -> ClientConfig {
        ClientConfig::new(server, self.profile.clone(), auth)
            .fingerprint(self.fingerprint)
            .sync(sync)
            .software(format!("confide-cli {}", env!("CARGO_PKG_VERSION")))
    }

    /// Connects with `auth` and reports a newly pinned certificate on stderr.
    async fn connect_as(
        &self,
        server: ServerAddress,
        auth: Auth,
        sync: bool,
    ) -> Result<(ClientHandle, EventStream), ClientError> {
        let (client, events) = Client::connect(self.config(server, auth, sync)).await?;
        let info = client.server();
        if info.newly_pinned {
            eprintln!("pinned server certificate SHA256 {}", info.fingerprint);
        }
        Ok((client, events))
    }

    /// Connects with the stored session.
    async fn connect(&self, sync: bool) -> Result<(ClientHandle, EventStream), ClientError> {
        let server = self.session_server()?;
        self.connect_as(server, Auth::Resume, sync).await
    }
}

/// Resolves `--room` / `--to` to a room id and how to name it. For `--to`, the direct
/// conversation must already exist.
async fn resolve_target(
    client: &ClientHandle,
    directory: &mut RoomDirectory,
    target: &TargetArgs,
) -> anyhow::Result<(RoomId, Place)> {
    for info in client.rooms().await? {
        directory.insert(info);
    }
    let room = match (&target.room, &target.to) {
        (Some(name), _) => client.room_id(name).await?,
        (None, Some(user)) => client.direct_room_id(user).await?,
        (None, None) => anyhow::bail!("name a room with --room or a user with --to"),
    };
    Ok((room, directory.place(room)))
}

/// Prints one line and flushes it, so output reaches pipes at once.
fn print(line: &Line) -> std::io::Result<()> {
    match line {
        Line::Out(text) => {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{text}")?;
            out.flush()
        }
        Line::Err(text) => {
            let mut err = std::io::stderr().lock();
            writeln!(err, "{text}")
        }
    }
}

/// Prints a line on standard output.
fn print_out(text: String) -> std::io::Result<()> {
    print(&Line::Out(text))
}
