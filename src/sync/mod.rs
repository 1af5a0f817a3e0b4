//! Console-side synchronization: configurations, attribute mappings and expressions, and applying
//! what agents import to the cloud directory.

pub mod calls;
pub mod engine;
pub mod expr;
pub mod mapping;
pub mod metrics;
pub mod scope;
pub mod service;
