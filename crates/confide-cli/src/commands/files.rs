//! `send-file`, `get-file` and `send-voice`: end-to-end encrypted files through the
//! server's blob store, with progress bars on a terminal.
//!
//! Interrupted transfers resume: running `send-file` again with the same file and
//! target continues the upload where the server's copy ends, and `get-file` continues
//! from the part file it left beside the destination.

use super::{Context, print_out};
use crate::cli::{DeleteFileArgs, GetFileArgs, SendFileArgs, TargetArgs};
use anyhow::{Context as _, bail};
use confide_client::{
    Attachment, ClientHandle, Progress, TransferProgress, human_size, safe_file_name,
};
use confide_crypto::payload::MessageId;
use confide_proto::Target;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A progress bar on standard error (hidden when it is not a terminal), with rate and
/// time left.
fn progress_bar(label: &str) -> (ProgressBar, Progress) {
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} {eta} left",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(label.to_owned());
    let shared = bar.clone();
    let progress: Progress = Arc::new(move |step: TransferProgress| {
        shared.set_length(step.total);
        shared.set_position(step.done);
    });
    (bar, progress)
}

async fn target(client: &ClientHandle, args: &TargetArgs) -> anyhow::Result<Target> {
    match (&args.room, &args.to) {
        (Some(name), _) => Ok(Target::Room(client.room_id(name).await?)),
        (None, Some(user)) => Ok(Target::User(user.to_string())),
        (None, None) => bail!("name a room with --room or a user with --to"),
    }
}

/// Prints what was sent: a `sent_file` object with `--json`, else one line.
fn report_sent(
    context: &Context,
    name: &str,
    size: u64,
    sent: &confide_client::SentFile,
) -> anyhow::Result<()> {
    if context.json {
        let line = serde_json::json!({
            "type": "sent_file",
            "room_id": sent.room.0,
            "seq": sent.ack.seq.0,
            "name": name,
            "size": size,
        });
        print_out(line.to_string())?;
    } else {
        print_out(format!("sent {name} ({})", human_size(size)))?;
    }
    Ok(())
}

/// `confide send-file (--room ROOM | --to USER) PATH`.
///
/// # Errors
/// If the file cannot be read, is over the server's limit (refused before upload), or
/// the server refuses.
pub async fn send_file(context: &Context, args: SendFileArgs) -> anyhow::Result<()> {
    let meta = std::fs::metadata(&args.path)
        .with_context(|| format!("cannot read {}", args.path.display()))?;
    if !meta.is_file() {
        bail!("{} is not a regular file", args.path.display());
    }
    let name = args
        .path
        .file_name()
        .map(|name| safe_file_name(&name.to_string_lossy()))
        .unwrap_or_else(|| "file".to_owned());
    let (client, events) = context.connect(false).await?;
    drop(events);
    let result = async {
        let target = target(&client, &args.target).await?;
        let (bar, progress) = progress_bar(&name);
        let sent = client.send_file(target, &args.path, progress).await;
        bar.finish_and_clear();
        let sent = sent?;
        report_sent(context, &name, sent.pointer.size, &sent)
    }
    .await;
    client.close().await;
    result
}

/// Where `get-file` saves: `--out` as a file, inside `--out` if it is a directory, or
/// the current directory; under the sender's name for the file, made safe.
fn destination(out: Option<&Path>, sender_name: &str) -> PathBuf {
    let safe = safe_file_name(sender_name);
    match out {
        Some(path) if path.is_dir() => path.join(safe),
        Some(path) => path.to_owned(),
        None => PathBuf::from(safe),
    }
}

/// The file or voice message `id` in the user's rooms.
async fn attachment(client: &ClientHandle, id: MessageId) -> anyhow::Result<Attachment> {
    match client.find_attachment(id).await? {
        Some(found) => Ok(found),
        None => bail!("no file or voice message with id {id} in your rooms' history"),
    }
}

/// `confide get-file ID [--out PATH] [--force]`.
///
/// # Errors
/// If no file message has that id, the destination exists (without `--force`), the
/// download fails, or the contents do not match the sender's hash (nothing is saved).
pub async fn get_file(context: &Context, args: GetFileArgs) -> anyhow::Result<()> {
    let id = message_id(&args.id)?;
    let (client, events) = context.connect(true).await?;
    drop(events);
    let result = async {
        let found = attachment(&client, id).await?;
        let out = destination(args.out.as_deref(), &found.pointer.name);
        let (bar, progress) = progress_bar(&safe_file_name(&found.pointer.name));
        let saved = client
            .download_file(&found.pointer, &out, args.force, progress)
            .await;
        bar.finish_and_clear();
        let size = saved?;
        if context.json {
            let line = serde_json::json!({
                "type": "file_saved",
                "path": out.display().to_string(),
                "size": size,
                "mime": found.pointer.mime,
                "from": found.sender.to_string(),
            });
            print_out(line.to_string())?;
        } else {
            print_out(format!(
                "saved {} ({}, from {}) to {}",
                safe_file_name(&found.pointer.name),
                human_size(size),
                found.sender,
                out.display()
            ))?;
        }
        Ok(())
    }
    .await;
    client.close().await;
    result
}

/// A message id from the command line.
fn message_id(text: &str) -> anyhow::Result<MessageId> {
    MessageId::from_hex(text).ok_or_else(|| {
        anyhow::anyhow!("{text:?} is not a message id (32 hex digits, as history shows)")
    })
}

/// `confide delete-file ID`: deletes one of the user's file or voice messages for
/// everyone, then its encrypted file from the server.
///
/// # Errors
/// If no file message has that id, someone else sent it, or the server refuses. If the
/// message was deleted but the file could not be, the error says so.
pub async fn delete_file(context: &Context, args: DeleteFileArgs) -> anyhow::Result<()> {
    let id = message_id(&args.id)?;
    let (client, events) = context.connect(true).await?;
    drop(events);
    let result = async {
        let found = attachment(&client, id).await?;
        if found.sender.canonical() != client.user().username.canonical() {
            bail!(
                "only its sender can delete a file: {id} was sent by {}",
                found.sender
            );
        }
        // The message first, so that nobody is offered a file that is gone.
        let ack = client.delete(found.room, id).await?;
        let removed = client
            .delete_blob(&found.pointer)
            .await
            .context("the message was deleted, but its file stays on the server")?;
        let name = safe_file_name(&found.pointer.name);
        if context.json {
            let line = serde_json::json!({
                "type": "file_deleted",
                "room_id": ack.room.0,
                "seq": ack.seq.0,
                "message_id": id.to_string(),
                "name": name,
                "file_removed": removed,
            });
            print_out(line.to_string())?;
        } else if removed {
            print_out(format!(
                "deleted {name} for everyone, and its file from the server"
            ))?;
        } else {
            print_out(format!(
                "deleted {name} for everyone; its file was no longer on the server"
            ))?;
        }
        Ok(())
    }
    .await;
    client.close().await;
    result
}

/// A voice message made from a file: Ogg Opus audio, its length and waveform.
struct VoiceNote {
    ogg: Vec<u8>,
    duration_ms: u32,
    waveform: Vec<u8>,
}

/// Reads a WAV file (encoding it to Ogg Opus) or an Ogg Opus file (checked by decoding
/// it), and summarises it.
fn voice_note(path: &Path) -> anyhow::Result<VoiceNote> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let (ogg, pcm) = if bytes.starts_with(b"OggS") {
        let pcm = confide_audio::decode_ogg_opus(&bytes)?;
        (bytes, pcm)
    } else if bytes.starts_with(b"RIFF") {
        let pcm = confide_audio::read_wav(&bytes)?;
        (confide_audio::encode_ogg_opus(pcm.samples())?, pcm)
    } else {
        bail!("not a WAV or Ogg Opus file");
    };
    if pcm.is_empty() {
        bail!("the recording is empty");
    }
    let summary =
        confide_audio::VoiceSummary::new(pcm.samples(), confide_audio::MAX_WAVEFORM_BUCKETS);
    Ok(VoiceNote {
        ogg,
        duration_ms: u32::try_from(summary.duration_ms).unwrap_or(u32::MAX),
        waveform: summary.waveform,
    })
}

/// `confide send-voice (--room ROOM | --to USER) FILE.wav|FILE.ogg`.
///
/// # Errors
/// If the file is not WAV or Ogg Opus audio, or sending fails.
pub async fn send_voice(context: &Context, args: SendFileArgs) -> anyhow::Result<()> {
    let path = args.path.clone();
    let note = tokio::task::spawn_blocking(move || voice_note(&path))
        .await
        .context("the audio task failed")?
        .with_context(|| format!("cannot use {} as a voice message", args.path.display()))?;
    let (client, events) = context.connect(false).await?;
    drop(events);
    let result = async {
        let target = target(&client, &args.target).await?;
        let (bar, progress) = progress_bar("voice message");
        let size = note.ogg.len() as u64;
        let sent = client
            .send_voice(target, note.ogg, note.duration_ms, note.waveform, progress)
            .await;
        bar.finish_and_clear();
        let sent = sent?;
        report_sent(context, "voice message", size, &sent)
    }
    .await;
    client.close().await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_are_safe_names_in_the_right_place() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            destination(Some(dir.path()), "../../x.txt"),
            dir.path().join("x.txt")
        );
        assert_eq!(
            destination(Some(Path::new("/tmp/chosen.bin")), "x.txt"),
            PathBuf::from("/tmp/chosen.bin")
        );
        assert_eq!(destination(None, ".hidden"), PathBuf::from("hidden"));
    }
}
