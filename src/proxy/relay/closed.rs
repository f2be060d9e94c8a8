//! The placeholder pingora's session keeps once the client's connection
//! has been taken out of it for the relay.

use std::io;

use pingora::protocols::Stream;

/// A connection that is already closed: reads end-of-file, writes vanish.
/// What pingora's session holds after the client's connection was taken.
#[derive(Debug)]
struct Closed;

impl tokio::io::AsyncRead for Closed {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        _buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

impl tokio::io::AsyncWrite for Closed {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        std::task::Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

impl pingora::protocols::l4::virt::VirtualSocket for Closed {
    fn set_socket_option(
        &self,
        _opt: pingora::protocols::l4::virt::VirtualSockOpt,
    ) -> io::Result<()> {
        Ok(())
    }
}

pub(super) fn closed_stream() -> Stream {
    Box::new(pingora::protocols::l4::stream::Stream::from(
        pingora::protocols::l4::virt::VirtualSocketStream::new(Box::new(Closed)),
    ))
}
