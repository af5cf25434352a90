//! The terminal of a foreground `run` whose spec asks for one (`process.terminal`) when
//! the caller passed no `--console-socket`: what a user typing `lwk-runc run` gets, as
//! with runc. The runtime listens on a socket of its own, libcontainer's init sends it
//! the master end of the container's pseudo-terminal, and the runtime relays that to
//! its own stdin and stdout: raw mode and the window size when stdin is a terminal,
//! the size again on SIGWINCH, and the terminal restored on the way out.

use std::fs::File;
use std::io::{IoSliceMut, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
use nix::sys::termios::{self, SetArg, Termios};

use crate::host::RemoveOnDrop;

/// The socket the container's init sends its pty master to.
pub struct Listener {
    listener: UnixListener,
    pub path: PathBuf,
    _remove: RemoveOnDrop,
}

impl Listener {
    pub fn bind(path: &Path) -> Result<Listener> {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path)
            .with_context(|| format!("creating the console socket {}", path.display()))?;
        Ok(Listener {
            listener,
            path: path.to_path_buf(),
            _remove: RemoveOnDrop(path.to_path_buf()),
        })
    }

    /// The pty master. By the time `create` returns, the init has connected and sent it
    /// (it does so before reporting ready), so this does not wait long.
    pub fn receive(self) -> Result<OwnedFd> {
        self.listener.set_nonblocking(true)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let stream = loop {
            match self.listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() > deadline {
                        bail!("the container's init never sent its terminal to the console socket");
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(e).context("accepting on the console socket"),
            }
        };
        stream.set_nonblocking(false)?;
        let mut buf = [0u8; 4096];
        let mut iov = [IoSliceMut::new(&mut buf)];
        let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        let msg = recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .context("receiving the container's terminal")?;
        for c in msg.cmsgs().context("reading the console message")? {
            if let ControlMessageOwned::ScmRights(fds) = c {
                if let Some(&fd) = fds.first() {
                    // SAFETY: SCM_RIGHTS just installed this fd in our table; we own it.
                    return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
        }
        bail!("the console socket message carried no terminal")
    }
}

/// A running relay between our stdio and the container's pty master.
pub struct Relay {
    master: File,
    saved: Option<Termios>,
    output_done: mpsc::Receiver<()>,
}

fn stdin_is_tty() -> bool {
    nix::unistd::isatty(std::io::stdin().as_raw_fd()).unwrap_or(false)
}

impl Relay {
    /// Start relaying. Call with the forwarded signals blocked, so the relay threads
    /// leave them to the waiting thread.
    pub fn start(master: OwnedFd) -> Result<Relay> {
        let master = File::from(master);
        let saved = if stdin_is_tty() {
            let stdin = std::io::stdin();
            let saved = termios::tcgetattr(stdin.as_fd()).context("reading the terminal mode")?;
            let mut raw = saved.clone();
            termios::cfmakeraw(&mut raw);
            termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw)
                .context("setting the terminal to raw mode")?;
            Some(saved)
        } else {
            None
        };
        let (tx, output_done) = mpsc::channel();
        let mut from = File::from(master_clone(&master)?);
        std::thread::spawn(move || {
            let mut out = std::io::stdout();
            // Ends with EIO once the last holder of the pty's other end is gone.
            let _ = std::io::copy(&mut from, &mut out);
            let _ = out.flush();
            let _ = tx.send(());
        });
        let relay = Relay {
            master,
            saved,
            output_done,
        };
        relay.resize();
        let mut to = File::from(master_clone(&relay.master)?);
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut std::io::stdin().lock(), &mut to);
        });
        Ok(relay)
    }

    /// Give the container's terminal our terminal's size (on start and on SIGWINCH).
    pub fn resize(&self) {
        // Our stdin was a terminal exactly when we saved its mode.
        if self.saved.is_none() {
            return;
        }
        // SAFETY: TIOCGWINSZ/TIOCSWINSZ read and write one winsize struct we own.
        unsafe {
            let mut ws: libc::winsize = std::mem::zeroed();
            if libc::ioctl(std::io::stdin().as_raw_fd(), libc::TIOCGWINSZ, &mut ws) == 0 {
                libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &ws);
            }
        }
    }

    /// After the container's process exited: let the output drain (bounded: a process
    /// left behind may keep the terminal open), then restore our terminal.
    pub fn finish(self) {
        let _ = self.output_done.recv_timeout(Duration::from_secs(2));
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(saved) = &self.saved {
            let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, saved);
        }
    }
}

fn master_clone(f: &File) -> Result<OwnedFd> {
    f.as_fd()
        .try_clone_to_owned()
        .context("duplicating the terminal")
}
