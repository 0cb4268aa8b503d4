//! The host side of one worker.
