//! Request handlers for live voice: turning a connection's speaker on or off in a room,
//! and relaying voice frames through the room's actor. Frames are never stored or
//! logged; only their size is checked.

use super::{Connection, LoggedIn};
use crate::room::Voice;
use confide_proto::{ErrorCode, ProtoError, Reply, RoomId};

impl Connection {
    pub(super) async fn listen(&self, room: RoomId, on: bool) -> Result<Reply, ProtoError> {
        self.room(room).await?.listen(self.out.clone(), on).await?;
        tracing::debug!(room = %room, on, "listen");
        Ok(Reply::Ok)
    }

    pub(super) async fn send_voice(
        &self,
        user: &LoggedIn,
        room: RoomId,
        body: Vec<u8>,
    ) -> Result<Reply, ProtoError> {
        let max = self.shared.config.limits.max_body_bytes as usize;
        if body.len() > max {
            return Err(ProtoError::new(
                ErrorCode::MessageTooLarge,
                format!(
                    "voice frame of {} bytes exceeds the limit of {max} bytes",
                    body.len()
                ),
            ));
        }
        self.room(room)
            .await?
            .voice(Voice {
                sender: user.person(),
                device: self.device,
                conn: self.conn,
                body,
            })
            .await?;
        Ok(Reply::Ok)
    }
}
