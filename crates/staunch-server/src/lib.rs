//! The Kafka-protocol TCP front end of a Staunch broker.
//!
//! [`Server`] accepts connections and reads size-prefixed request frames (refusing any larger
//! than the configured maximum before allocating), decodes them with `staunch-protocol`, calls
//! the [`staunch_broker::Broker`], and writes each answer in request order. Bad input from one
//! client closes that client's connection with a log line; it never stops the server.

mod connection;
mod handlers;
mod server;

pub use server::{Server, ServerConfig};
