//! The one way agentctl's synchronous code runs a future: a throwaway
//! single-threaded runtime per call. The launcher must hold no thread
//! across the native backend's fork of its helper, so no runtime lives
//! longer than the operation it runs.

/// Runs `f` on a fresh current-thread runtime, then drops the runtime
/// without waiting for blocking tasks (a read of a terminal may never
/// return).
pub fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        // Fails only when the process cannot make an epoll instance or a
        // timer: nothing agentctl could go on without.
        .expect("a tokio runtime");
    let out = rt.block_on(f);
    rt.shutdown_background();
    out
}
