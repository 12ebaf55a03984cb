//! A native actix-web server answering exactly what `examples/guests/hello` answers: the
//! baseline `benches/hello-rps.sh` measures Wharf against.
//!
//! Usage: `native_hello ADDRESS` (e.g. `127.0.0.1:8081`).

use actix_web::{App, HttpResponse, HttpServer, web};

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8081".to_owned());
    HttpServer::new(|| {
        App::new().default_service(web::to(|| async {
            HttpResponse::Ok()
                .content_type("text/plain")
                .body("Hello, World!\n")
        }))
    })
    .bind(address)?
    .run()
    .await
}
