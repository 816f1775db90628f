//! One type for "a socket, maybe wrapped in TLS", on both sides of the gateway.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

pub enum Stream {
    Plain(TcpStream),
    /// A client that negotiated TLS with us.
    ServerTls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// Our TLS connection to an upstream database.
    ClientTls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

pub type ReadHalf<'a> = Box<dyn AsyncRead + Send + Unpin + 'a>;
pub type WriteHalf<'a> = Box<dyn AsyncWrite + Send + Unpin + 'a>;

impl Stream {
    pub fn is_tls(&self) -> bool {
        !matches!(self, Stream::Plain(_))
    }

    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::ServerTls(s) => s.get_ref().0,
            Stream::ClientTls(s) => s.get_ref().0,
        }
    }

    /// Borrowed halves so both directions can run concurrently in one task.
    /// Plain TCP splits without a lock; TLS needs tokio's shared-state split.
    pub fn split(&mut self) -> (ReadHalf<'_>, WriteHalf<'_>) {
        match self {
            Stream::Plain(s) => {
                let (r, w) = s.split();
                (Box::new(r), Box::new(w))
            }
            Stream::ServerTls(s) => {
                let (r, w) = tokio::io::split(s.as_mut());
                (Box::new(r), Box::new(w))
            }
            Stream::ClientTls(s) => {
                let (r, w) = tokio::io::split(s.as_mut());
                (Box::new(r), Box::new(w))
            }
        }
    }

    /// True when an idle connection has nothing to read: neither data nor EOF.
    /// Used before handing out a pooled upstream connection.
    pub async fn is_quiet(&self) -> bool {
        let mut byte = [0u8; 1];
        matches!(
            tokio::time::timeout(std::time::Duration::ZERO, self.tcp().peek(&mut byte)).await,
            Err(_elapsed)
        )
    }
}

macro_rules! delegate {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            Stream::Plain($s) => $e,
            Stream::ServerTls($s) => $e,
            Stream::ClientTls($s) => $e,
        }
    };
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_shutdown(cx))
    }
}
