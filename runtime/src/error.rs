//! The one error type of the runtime. Messages are lowercase, carry the
//! container id and say what to do, so the agent can pass them on as they are.

use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("invalid container id {id:?}: {why}")]
    InvalidId { id: String, why: String },

    #[error("invalid spec for container {id}: {why}")]
    InvalidSpec { id: String, why: String },

    #[error("layer {} of container {id} does not exist; unpack the image again", path.display())]
    LayerMissing { id: String, path: PathBuf },

    #[error("command {command:?} of container {id} is not an executable file in its image; check the image's entrypoint, cmd and PATH")]
    CommandNotFound { id: String, command: String },

    #[error("container {id} already exists; delete it first or pick another id")]
    AlreadyExists { id: String },

    #[error("container {id} not found; list the known ones with Runtime::list")]
    NotFound { id: String },

    #[error("cannot set up the cgroup of container {id}: {message}; check that the cgroup controllers are mounted and writable")]
    Cgroup { id: String, message: String },

    #[error("container {id} failed to start: {message}")]
    StartFailed { id: String, message: String },

    #[error("cannot run the container shim {}: {source}; check the ShimCommand given to Runtime::open", program.display())]
    ShimSpawn {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("the shim of container {id} did not report within {waited:?}; it was killed and the container removed")]
    StartTimeout { id: String, waited: Duration },

    #[error("container {id} still runs after {waited:?}; wait longer or kill it")]
    WaitTimeout { id: String, waited: Duration },

    #[error("cannot run a command in container {id}: {message}")]
    ExecFailed { id: String, message: String },

    #[error("invalid signal {signal} for container {id}; use 1 to 64")]
    InvalidSignal { id: String, signal: i32 },

    #[error("cannot remove container {id}: {} is still mounted; unmount it by hand and delete again", path.display())]
    StillMounted { id: String, path: PathBuf },

    #[error("cannot {what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("the state of container {id} in {} is unreadable: {message}; delete the container", path.display())]
    BadState {
        id: String,
        path: PathBuf,
        message: String,
    },
}

impl RuntimeError {
    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        RuntimeError::Io {
            what,
            path: path.into(),
            source,
        }
    }
}
