//! The bb8 pool of connections for exclusive use (transactions, blocking commands, long scans).

use std::ops::{Deref, DerefMut};

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{Cmd, Pipeline, RedisFuture, Value};
use stateful_redis_core::Error;

use crate::connect::Connector;
use crate::error::breaks_connection;

/// bb8's view of how to make and check connections.
#[derive(Debug)]
pub(crate) struct Manager {
    pub(crate) connector: Connector,
}

/// A pooled connection and whether a request found it broken.
#[derive(Debug)]
pub(crate) struct Conn {
    conn: MultiplexedConnection,
    broken: bool,
}

impl bb8::ManageConnection for Manager {
    type Connection = Conn;
    type Error = Error;

    async fn connect(&self) -> Result<Conn, Error> {
        let conn = self.connector.open().await?;
        Ok(Conn { conn, broken: false })
    }

    async fn is_valid(&self, conn: &mut Conn) -> Result<(), Error> {
        ping(conn, self.connector.response_timeout).await
    }

    fn has_broken(&self, conn: &mut Conn) -> bool {
        conn.broken
    }
}

pub(crate) async fn ping(conn: &mut impl ConnectionLike, timeout: std::time::Duration) -> Result<(), Error> {
    redis::cmd("PING")
        .query_async::<()>(conn)
        .await
        .map_err(|e| crate::map_redis_error(e, timeout))
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let result = self.conn.send_packed_command(cmd).await;
            if matches!(&result, Err(e) if breaks_connection(e)) {
                self.broken = true;
            }
            result
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let result = self.conn.send_packed_commands(pipeline, offset, count).await;
            if matches!(&result, Err(e) if breaks_connection(e)) {
                self.broken = true;
            }
            result
        })
    }

    fn get_db(&self) -> i64 {
        self.conn.get_db()
    }
}

/// A connection checked out of the pool for exclusive use; it returns to the pool on
/// drop, unless a request found it broken, in which case it is closed.
pub struct ExclusiveConnection {
    pub(crate) inner: bb8::PooledConnection<'static, Manager>,
}

impl std::fmt::Debug for ExclusiveConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExclusiveConnection")
            .field("broken", &self.inner.broken)
            .finish_non_exhaustive()
    }
}

impl ExclusiveConnection {
    /// Marks the connection broken so it is closed instead of reused, for example after
    /// a `SUBSCRIBE` or `CLIENT` command left it in a state others must not inherit.
    pub fn discard(&mut self) {
        self.inner.broken = true;
    }
}

impl ConnectionLike for ExclusiveConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        self.inner.deref_mut().req_packed_command(cmd)
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        self.inner.deref_mut().req_packed_commands(pipeline, offset, count)
    }

    fn get_db(&self) -> i64 {
        self.inner.deref().get_db()
    }
}
