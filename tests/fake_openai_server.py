"""An OpenAI-compatible fake of vLLM's HTTP server, for the smoke test's tests.

Run as a process (tests start it on 127.0.0.1 and stop it by PID):
    python tests/fake_openai_server.py --port P --api-key KEY --model NAME --max-model-len N
        [--lora NAME ...] [--metrics FILE] [--first-token-delay S] [--break-stream] [--max-seconds S]

- GET  /v1/models            -> vLLM's model list: the base card carries max_model_len, each LoRA adapter's
                                card (--lora, default one named an-adapter) the base model as its parent
- POST /v1/chat/completions  -> a completion from the model or an adapter, or with "stream": true SSE
                                `data:` chunks ending in [DONE]
- GET  /metrics              -> the exposition text of --metrics, unauthenticated as in vLLM
/v1/* needs `Authorization: Bearer KEY` and answers 401 otherwise, like vLLM with VLLM_API_KEY.
The process exits by itself after --max-seconds, so a crashed test cannot leave it behind for long.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

WORDS = ["Hello", "!", " How", " can", " I", " help", "?"]


def make_handler(args: argparse.Namespace) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *values: object) -> None:  # quiet test output
            pass

        def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, payload: object) -> None:
            self._send(status, json.dumps(payload).encode())

        def _authorized(self) -> bool:
            if self.headers.get("Authorization") == f"Bearer {args.api_key}":
                return True
            self._json(401, {"error": "Unauthorized"})
            return False

        def do_GET(self) -> None:
            if self.path == "/metrics" and args.metrics:
                self._send(200, Path(args.metrics).read_bytes(), "text/plain; version=1.0.0; charset=utf-8")
            elif self.path == "/v1/models":
                if self._authorized():
                    self._json(200, {"object": "list", "data": model_cards(args)})
            else:
                self._json(404, {"detail": "Not Found"})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
            if self.path != "/v1/chat/completions":
                self._json(404, {"detail": "Not Found"})
                return
            if not self._authorized():
                return
            if body.get("model") not in (args.model, *args.lora):
                message = f"The model `{body.get('model')}` does not exist."
                self._json(404, {"error": {"message": message, "type": "NotFoundError", "code": 404}})
                return
            words = WORDS[: body.get("max_tokens") or len(WORDS)]
            if body.get("stream") and args.break_stream:
                self._broken_stream()
                return
            if body.get("stream"):
                self._stream(words)
                return
            self._json(
                200,
                {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": body["model"],
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": "".join(words)},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {
                        "prompt_tokens": 12,
                        "completion_tokens": len(words),
                        "total_tokens": 12 + len(words),
                    },
                },
            )

        def _stream(self, words: list[str]) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Connection", "close")
            self.end_headers()
            # vLLM's first chunk names the role with empty content; text follows after prefill.
            deltas = [{"role": "assistant", "content": ""}] + [{"content": word} for word in words]
            for index, delta in enumerate(deltas):
                if index == 1:
                    time.sleep(args.first_token_delay)
                chunk = {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion.chunk",
                    "created": int(time.time()),
                    "model": args.model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
                }
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                self.wfile.flush()
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
            self.close_connection = True

        def _broken_stream(self) -> None:
            """A chunked body cut off after its first chunk, as a dropped connection leaves it."""
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            event = b'data: {"id": "x", "object": "chat.completion.chunk", "choices": []}\n\n'
            self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
            self.wfile.flush()
            self.close_connection = True

    return Handler


def model_cards(args: argparse.Namespace) -> list[dict[str, object]]:
    base = {
        "id": args.model,
        "object": "model",
        "created": int(time.time()),
        "owned_by": "vllm",
        "root": f"/models/{args.model}",
        "parent": None,
        "max_model_len": args.max_model_len,
    }
    # vLLM lists adapters first, each with the base model's name as parent and no max_model_len
    loras = [
        {**base, "id": name, "root": f"/models/{name}", "parent": args.model, "max_model_len": None}
        for name in args.lora
    ]
    return [*loras, base]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--max-model-len", type=int, required=True)
    parser.add_argument("--lora", action="append", help="a LoRA adapter it serves (repeatable)")
    parser.add_argument("--metrics")
    parser.add_argument("--first-token-delay", type=float, default=0.0)
    parser.add_argument("--break-stream", action="store_true", help="cut streamed answers off mid-body")
    parser.add_argument("--max-seconds", type=float, default=300.0)
    args = parser.parse_args()
    args.lora = args.lora or ["an-adapter"]
    server = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(args))
    threading.Timer(args.max_seconds, server.shutdown).start()
    server.serve_forever()


if __name__ == "__main__":
    main()
