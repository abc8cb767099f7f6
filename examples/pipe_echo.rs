//! A named-pipe echo server on Windows: one pipe instance serves several
//! clients in turn. Each client connects, writes a message, reads the echo
//! and leaves; the server accepts it (`ConnectNamedPipe`), echoes, and
//! disconnects (`DisconnectNamedPipe`) to free the instance for the next.
//!
//! ```text
//! cargo run --example pipe_echo -- [CLIENTS]
//! ```
//!
//! Default: 3 clients. Windows only; elsewhere it says so and exits.

#[cfg(windows)]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    use futures::executor::block_on; // any executor would do
    use iocompletion::Runtime;
    use std::future::IntoFuture;

    let clients: usize = std::env::args().nth(1).map_or(Ok(3), |s| s.parse())?;
    let name = format!("iocompletion-pipe-echo-{}", std::process::id());
    let rt = Runtime::builder().build()?;
    let server = iocompletion::windows::named_pipe_server(&name, true)?;
    rt.bind_async(&server)?;

    let serve = async {
        for _ in 0..clients {
            server.accept().await?; // the instance is the connection
            let (n, buf) = server.read(Vec::with_capacity(4096)).await;
            n?;
            let (w, _) = server.write(buf).await;
            w?;
            // Wait for the client to leave (its end of stream), then free
            // the instance for the next client.
            let (n, _) = server.read(Vec::with_capacity(1)).await;
            if !matches!(n, Ok(0) | Err(_)) {
                return Err("the client sent more than one message".into());
            }
            iocompletion::windows::disconnect_named_pipe(&server)?;
        }
        Ok::<(), Box<dyn std::error::Error>>(())
    };
    let clients = std::thread::spawn({
        let rt = rt.clone();
        let name = name.clone();
        move || -> Result<(), String> {
            for i in 0..clients {
                let client = iocompletion::windows::named_pipe_client(&name).map_err(|e| e.to_string())?;
                rt.bind_async(&client).map_err(|e| e.to_string())?;
                let msg = format!("hello from client {i}").into_bytes();
                let (w, _) = block_on(client.write(msg.clone()).into_future());
                w.map_err(|e| e.to_string())?;
                let (n, echo) = block_on(client.read(Vec::with_capacity(4096)).into_future());
                n.map_err(|e| e.to_string())?;
                if echo != msg {
                    return Err(format!("client {i} got {echo:?}"));
                }
                println!("client {i}: echoed {} bytes", echo.len());
            }
            Ok(())
        }
    });
    block_on(serve)?;
    clients.join().map_err(|_| "a client panicked")??;
    rt.shutdown();
    println!("one pipe instance served every client in turn");
    Ok(())
}

#[cfg(not(windows))]
fn main() {
    println!("pipe_echo uses Windows named pipes; on this OS see examples/echo_server.rs");
}
