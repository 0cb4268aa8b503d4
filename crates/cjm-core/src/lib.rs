//! cjm's shared vocabulary: the error taxonomy and `JobError`, content hashing and
//! plugin metadata. It knows nothing about processes, channels or environments.
