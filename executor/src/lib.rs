//! The executor's library: the flow file format (`format`), template
//! rendering (`template`), the DAG runner (`run`) and the run spool
//! (`spool`). The `flow-executor` binary drives them inside its sandbox;
//! nothing here opens a socket or a file outside the spool directory it is
//! given.

pub mod format;
pub mod run;
pub mod spool;
pub mod template;
