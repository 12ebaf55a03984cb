//! A streaming echo `wasi:http/proxy` component: answers 200 at once and sends the
//! request body back piece by piece as it arrives, so neither side holds the whole body.
//! A request with `x-echo-trailer: yes` gets the number of bytes echoed as the trailer
//! field `x-echo-bytes`.

use std::io::Write as _;

use wasi::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};
use wasi::io::streams::StreamError;

struct Echo;

wasi::http::proxy::export!(Echo);

/// Largest piece read from the request body at a time.
const PIECE: u64 = 64 * 1024;

impl wasi::exports::http::incoming_handler::Guest for Echo {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let headers = Fields::from_list(&[(
            "content-type".to_owned(),
            b"application/octet-stream".to_vec(),
        )])
        .expect("valid header fields");
        let response = OutgoingResponse::new(headers);
        let out_body = response.body().expect("the body is taken once");
        ResponseOutparam::set(response_out, Ok(response));

        let wants_trailer = request
            .headers()
            .get("x-echo-trailer")
            .iter()
            .any(|value| value == b"yes");
        let in_body = request.consume().expect("the body is consumed once");
        let input = in_body.stream().expect("the stream is taken once");
        let mut output = out_body.write().expect("the stream is taken once");
        let mut echoed = 0usize;
        loop {
            let piece = match input.blocking_read(PIECE) {
                Ok(piece) => piece,
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(e)) => {
                    panic!("the request body failed: {}", e.to_debug_string())
                }
            };
            output.write_all(&piece).expect("the client takes the body");
            echoed += piece.len();
        }
        output.flush().expect("the client takes the body");
        drop(output);
        drop(input);
        let trailers = wants_trailer.then(|| {
            Fields::from_list(&[("x-echo-bytes".to_owned(), echoed.to_string().into_bytes())])
                .expect("a valid trailer field")
        });
        OutgoingBody::finish(out_body, trailers).expect("the body is complete");
    }
}

