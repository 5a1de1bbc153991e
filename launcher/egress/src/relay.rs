//! The relay of an open tunnel: bytes between the sandbox's connection and
//! the upstream one with splice(2) through a pipe, so they never cross
//! into this process (on two cores, a copy through user space cost a third
//! of a bulk download's throughput; see docs/BENCHMARKS.md). Each
//! direction ends on its own: end of input is passed on as a half close.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::TcpStream;

/// How much a pipe holds between the two sockets.
const PIPE_BYTES: usize = 1 << 20;

/// Relays until both directions have ended (or either failed).
pub async fn relay(a: &mut TcpStream, b: &mut TcpStream) {
    let (Ok(ab), Ok(ba)) = (Pipe::new(), Pipe::new()) else {
        // No pipes (descriptor limit): the plain copy still works.
        let _ = tokio::io::copy_bidirectional(a, b).await;
        return;
    };
    let (a, b) = (&*a, &*b);
    let (ab, ba) = (one_way(a, b, ab), one_way(b, a, ba));
    tokio::pin!(ab, ba);
    // An end of input leaves the other way open (a half close); an error
    // (a reset) ends both, so the other peer is not left waiting on a
    // connection that can never answer.
    tokio::select! {
        r = &mut ab => if r.is_ok() { let _ = ba.await; },
        r = &mut ba => if r.is_ok() { let _ = ab.await; },
    }
}

struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    /// Bytes in the pipe, not yet written out.
    held: usize,
}

impl Pipe {
    fn new() -> io::Result<Pipe> {
        let mut fds = [0 as RawFd; 2];
        // SAFETY: pipe2 fills the two descriptors, which we own from here.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fresh descriptors from pipe2.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // A larger pipe moves more per call; the default (64 KiB) works too.
        // SAFETY: fcntl on a descriptor we own.
        unsafe {
            libc::fcntl(
                write.as_raw_fd(),
                libc::F_SETPIPE_SZ,
                PIPE_BYTES as libc::c_int,
            )
        };
        Ok(Pipe {
            read,
            write,
            held: 0,
        })
    }
}

fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: splice between descriptors we hold, no offsets.
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

async fn one_way(from: &TcpStream, to: &TcpStream, mut pipe: Pipe) -> io::Result<()> {
    loop {
        if pipe.held == 0 {
            from.readable().await?;
            let n = match from.try_io(Interest::READABLE, || {
                splice(from.as_raw_fd(), pipe.write.as_raw_fd(), PIPE_BYTES)
            }) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            };
            if n == 0 {
                // End of input: pass it on, keep the other way open.
                // SAFETY: shutdown of a socket we hold a reference to.
                unsafe { libc::shutdown(to.as_raw_fd(), libc::SHUT_WR) };
                return Ok(());
            }
            pipe.held = n;
        }
        to.writable().await?;
        match to.try_io(Interest::WRITABLE, || {
            splice(pipe.read.as_raw_fd(), to.as_raw_fd(), pipe.held)
        }) {
            Ok(n) => pipe.held -= n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
}

/// Writes `bytes` and then relays: what the proxy read ahead (a request
/// head, a ClientHello) goes first.
pub async fn relay_after(
    client: &mut TcpStream,
    up: &mut TcpStream,
    early: &[u8],
) -> io::Result<()> {
    up.write_all(early).await?;
    relay(client, up).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn relays_a_conversation() {
        // Round trips one way and the other, nothing closed in between: a
        // TLS handshake, or keep-alive requests.
        let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let front = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (saddr, faddr) = (server.local_addr().unwrap(), front.local_addr().unwrap());
        tokio::spawn(async move {
            let (mut s, _) = server.accept().await.unwrap();
            let mut b = [0u8; 3];
            loop {
                if s.read_exact(&mut b).await.is_err() {
                    return;
                }
                s.write_all(&[b[0], b[1], b[2], b'!']).await.unwrap();
            }
        });
        tokio::spawn(async move {
            let (mut c, _) = front.accept().await.unwrap();
            let mut up = TcpStream::connect(saddr).await.unwrap();
            relay(&mut c, &mut up).await;
        });
        let mut t = TcpStream::connect(faddr).await.unwrap();
        // Pipes enough to pass the user's soft limit of pipe pages: later
        // pipes are one page and must still carry everything.
        let mut idle = Vec::new();
        for _ in 0..40 {
            let (a, b) = (Pipe::new().unwrap(), Pipe::new().unwrap());
            idle.push((a, b));
        }
        for i in 0..200u8 {
            t.write_all(&[i, i, i]).await.unwrap();
            let mut back = [0u8; 4];
            tokio::time::timeout(std::time::Duration::from_secs(5), t.read_exact(&mut back))
                .await
                .unwrap_or_else(|_| panic!("round trip {i} stalled"))
                .unwrap();
            assert_eq!(back, [i, i, i, b'!']);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reset_on_one_side_closes_the_other() {
        // A client that closes with unread data resets its connection: the
        // upstream must see its end, not wait for a client that is gone
        // (found by the lab: a server stuck in a handshake held up its
        // next connections).
        let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let front = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (saddr, faddr) = (server.local_addr().unwrap(), front.local_addr().unwrap());
        let srv = tokio::spawn(async move {
            let (mut s, _) = server.accept().await.unwrap();
            s.write_all(&[7u8; 4096]).await.unwrap();
            let mut b = [0u8; 16];
            tokio::time::timeout(std::time::Duration::from_secs(5), s.read(&mut b)).await
        });
        tokio::spawn(async move {
            let (mut c, _) = front.accept().await.unwrap();
            let mut up = TcpStream::connect(saddr).await.unwrap();
            relay(&mut c, &mut up).await;
        });
        let mut t = TcpStream::connect(faddr).await.unwrap();
        let mut one = [0u8; 1];
        t.read_exact(&mut one).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        drop(t);
        let got = srv.await.unwrap();
        assert!(
            matches!(got, Ok(Ok(0)) | Ok(Err(_))),
            "the upstream was left waiting: {got:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn relays_both_ways_with_half_close() {
        // server <- up ... relay ... client -> tester
        let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let front = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (saddr, faddr) = (server.local_addr().unwrap(), front.local_addr().unwrap());
        let big: Vec<u8> = (0..5_000_000u32).map(|i| (i % 251) as u8).collect();
        let want = big.clone();
        let srv = tokio::spawn(async move {
            let (mut s, _) = server.accept().await.unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.unwrap();
            s.write_all(&big).await.unwrap();
            got
        });
        let mid = tokio::spawn(async move {
            let (mut c, _) = front.accept().await.unwrap();
            let mut up = TcpStream::connect(saddr).await.unwrap();
            relay_after(&mut c, &mut up, b"early ").await.unwrap();
        });
        let mut t = TcpStream::connect(faddr).await.unwrap();
        t.write_all(b"hello").await.unwrap();
        t.shutdown().await.unwrap();
        let mut back = Vec::new();
        t.read_to_end(&mut back).await.unwrap();
        assert_eq!(srv.await.unwrap(), b"early hello");
        assert!(
            back == want,
            "{} bytes back, {} sent",
            back.len(),
            want.len()
        );
        mid.await.unwrap();
    }
}
