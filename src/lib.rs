//! The `storepulse` CLI library: the local stack (throwaway Postgres + broker), the
//! store simulator, the gateway that posts simulated events, and the dev command
//! that wires them to the services, the analyst roles (tenant isolation), and the
//! load driver with the stack it starts, and the throughput benchmarks' parts (the
//! broker's raw produce rate, the read-store and end-to-end rules benchmarks).

pub mod analysts;
pub mod dead_letter_admin;
pub mod dev_stack;
pub mod effective_config;
pub mod gateway;
pub mod load;
pub mod load_stack;
pub mod local_stack;
pub mod notification_sink;
pub mod raw_produce;
pub mod read_store_bench;
pub mod rebuild;
pub mod rules_bench;
pub mod simulator;
