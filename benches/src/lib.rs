//! End-to-end benchmarks. `benches/compare.sh` runs the side-by-side comparison with nginx;
//! the `bench-tool` binary provides the load generators and upstreams that wrk and h2load
//! do not (WebSocket echo, SSE fan-out, idle TLS connections) and the shared certificate.
