//! The smallest useful `wasi:http/proxy` component: every request is answered 200 with
//! the body `Hello`.

use std::io::Write as _;

use wasi::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

struct Hello;

wasi::http::proxy::export!(Hello);

impl wasi::exports::http::incoming_handler::Guest for Hello {
    fn handle(_request: IncomingRequest, response_out: ResponseOutparam) {
        let headers = Fields::from_list(&[
            ("content-type".to_owned(), b"text/plain".to_vec()),
            ("content-length".to_owned(), b"5".to_vec()),
        ])
        .expect("valid header fields");
        let response = OutgoingResponse::new(headers);
        let body = response.body().expect("the body is taken once");
        ResponseOutparam::set(response_out, Ok(response));
        let mut out = body.write().expect("the stream is taken once");
        out.write_all(b"Hello").expect("the client takes the body");
        out.flush().expect("the client takes the body");
        drop(out);
        OutgoingBody::finish(body, None).expect("the body is complete");
    }
}
