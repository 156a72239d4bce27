//! What drvisor knows of a Linux guest's kernel.

pub mod task_layout;
