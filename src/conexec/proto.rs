//! The wire between a rank's `conexec` client and the job's rank server: a unix stream
//! socket carrying newline-delimited JSON. The client's first message carries the rank's
//! stdin, stdout and stderr as SCM_RIGHTS; everything after is small control messages.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use serde::{Deserialize, Serialize};

/// The largest launch request accepted (argv + environment); a rank's environment is a
/// few KiB, so anything near this is a mistake or an attack.
pub const MAX_REQUEST: usize = 4 << 20;
/// Descriptors beyond stdio a rank may bring (PMI_FD is the one launchers use).
pub const MAX_EXTRA_FDS: usize = 4;

/// Everything that makes a rank itself, sent once when it joins.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    pub argv: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub umask: u32,
    /// Descriptors beyond stdio, by the number the rank must see them under (Hydra's
    /// and Slurm pmi2's `PMI_FD`); attached after stdin, stdout and stderr.
    #[serde(default)]
    pub extra_fds: Vec<i32>,
}

/// Server to client.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Reply {
    /// The rank's launcher runs, with this pid in the container.
    Started { pid: i32 },
    /// The rank exited with this code. `last`: no other rank of the job is running or
    /// expected, so the container is being deleted and its client waits for that.
    Exited {
        code: i32,
        #[serde(default)]
        last: bool,
    },
    /// The rank was killed by this signal; `last` as for `Exited`.
    Signaled {
        signal: i32,
        #[serde(default)]
        last: bool,
    },
    /// The rank could not be started.
    Error { message: String },
}

/// Client to server, after [`Launch`].
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Control {
    /// Deliver this signal to the rank.
    Signal { signal: i32 },
}

/// Send the launch request with the three stdio descriptors attached.
pub fn send_launch(sock: &UnixStream, launch: &Launch, fds: &[RawFd]) -> io::Result<()> {
    let mut body = serde_json::to_vec(launch).map_err(io::Error::other)?;
    body.push(b'\n');
    let cmsg = [ControlMessage::ScmRights(fds)];
    let first = [io::IoSlice::new(&body)];
    let sent = sendmsg::<()>(sock.as_raw_fd(), &first, &cmsg, MsgFlags::empty(), None)
        .map_err(io::Error::from)?;
    (&*sock).write_all(&body[sent..])
}

/// Receive a launch request: its body and the descriptors that came with it.
pub fn recv_launch(sock: &UnixStream) -> io::Result<(Launch, Vec<OwnedFd>)> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut space = nix::cmsg_space!([RawFd; 3 + MAX_EXTRA_FDS]);
    let (n, fds) = {
        let mut iov = [io::IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(io::Error::from)?;
        let mut fds = Vec::new();
        for c in msg.cmsgs().map_err(io::Error::from)? {
            if let ControlMessageOwned::ScmRights(r) = c {
                // SAFETY: the kernel just installed these descriptors for us.
                fds.extend(r.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
            }
        }
        (msg.bytes, fds)
    };
    buf.truncate(n);
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the rank closed before sending its launch request",
        ));
    }
    while !buf.ends_with(b"\n") {
        if buf.len() > MAX_REQUEST {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("launch request larger than {MAX_REQUEST} bytes"),
            ));
        }
        let mut more = [0u8; 64 * 1024];
        let k = (&*sock).read(&mut more)?;
        if k == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the rank closed in the middle of its launch request",
            ));
        }
        buf.extend_from_slice(&more[..k]);
    }
    let launch =
        serde_json::from_slice(&buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    Ok((launch, fds))
}

/// One JSON line.
pub fn send<T: Serialize>(mut w: impl Write, msg: &T) -> io::Result<()> {
    let mut line = serde_json::to_vec(msg).map_err(io::Error::other)?;
    line.push(b'\n');
    w.write_all(&line)
}

/// Splits a byte stream into JSON lines.
#[derive(Default)]
pub struct Lines {
    buf: Vec<u8>,
}

impl Lines {
    /// Read what is available (one read); Ok(false) on EOF.
    pub fn fill(&mut self, mut r: impl Read) -> io::Result<bool> {
        let mut chunk = [0u8; 4096];
        let n = r.read(&mut chunk)?;
        self.buf.extend_from_slice(&chunk[..n]);
        if self.buf.len() > MAX_REQUEST {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "message too long",
            ));
        }
        Ok(n > 0)
    }

    /// The next complete message, if any.
    pub fn next<T: for<'de> Deserialize<'de>>(&mut self) -> Option<io::Result<T>> {
        let end = self.buf.iter().position(|&b| b == b'\n')?;
        let line: Vec<u8> = self.buf.drain(..=end).collect();
        Some(
            serde_json::from_slice(&line)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_launch_request_carries_its_descriptors_and_survives_a_large_environment() {
        let (a, b) = UnixStream::pair().unwrap();
        let launch = Launch {
            argv: vec!["./mpi_hello".into(), "x y".into()],
            env: (0..2000)
                .map(|i| format!("VAR{i}={}", "v".repeat(64)))
                .collect(),
            cwd: "/work".into(),
            uid: 1000,
            gid: 1000,
            groups: vec![1000, 27],
            umask: 0o022,
            extra_fds: vec![],
        };
        let file = std::fs::File::open("/dev/null").unwrap();
        let fd = file.as_raw_fd();
        let t = std::thread::spawn(move || send_launch(&a, &launch, &[fd, fd, fd]).map(|_| launch));
        let (got, fds) = recv_launch(&b).unwrap();
        let sent = t.join().unwrap().unwrap();
        assert_eq!(got, sent);
        assert_eq!(fds.len(), 3);
    }

    #[test]
    fn replies_split_into_lines_whatever_the_chunking() {
        let mut l = Lines::default();
        l.buf
            .extend_from_slice(b"{\"started\":{\"pid\":7}}\n{\"exited\":{\"co");
        assert_eq!(
            l.next::<Reply>().unwrap().unwrap(),
            Reply::Started { pid: 7 }
        );
        assert!(l.next::<Reply>().is_none());
        l.buf.extend_from_slice(b"de\":3}}\n");
        assert_eq!(
            l.next::<Reply>().unwrap().unwrap(),
            Reply::Exited {
                code: 3,
                last: false
            }
        );
    }
}
