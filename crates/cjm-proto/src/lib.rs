//! The host⇄worker wire protocol. It knows nothing about processes.
