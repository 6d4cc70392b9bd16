//! zync-web: static HTTP server and the cluster's HTTP face (in progress).
