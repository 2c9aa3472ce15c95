"""The peer of `sieve judge` for the throughput benchmark: a plain asyncio client that
sends the same chat-completion requests (an OpenAI Batch input file written by
`sieve judge --write-requests`) with N connections kept alive, and parses each reply.
Standard library only, so nothing but the HTTP work is measured.

usage: plain_client.py REQUESTS.jsonl BASE_URL CONCURRENCY   (BASE_URL like http://127.0.0.1:8089/v1)
prints: requests, seconds, failures
"""
import asyncio
import json
import sys
import time
from urllib.parse import urlparse


async def read_response(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:] if ":" in l)}
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                break
            body += await reader.readexactly(size)
            await reader.readexactly(2)
    else:
        body = await reader.read()
    return status, body


async def worker(queue, host, port, path, results):
    reader, writer = await asyncio.open_connection(host, port)
    while True:
        try:
            body = queue.get_nowait()
        except asyncio.QueueEmpty:
            break
        req = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
        writer.write(req)
        await writer.drain()
        status, data = await read_response(reader)
        ok = status == 200
        if ok:
            reply = json.loads(data)
            ok = bool(reply["choices"][0]["logprobs"]["content"][0]["top_logprobs"])
        results.append(ok)
    writer.close()


async def main(path, base, concurrency):
    bodies = [json.dumps(json.loads(l)["body"]).encode() for l in open(path)]
    u = urlparse(base.rstrip("/") + "/chat/completions")
    queue = asyncio.Queue()
    for b in bodies:
        queue.put_nowait(b)
    results = []
    t0 = time.perf_counter()
    await asyncio.gather(*(worker(queue, u.hostname, u.port or 80, u.path, results) for _ in range(concurrency)))
    dt = time.perf_counter() - t0
    print(json.dumps({"requests": len(results), "seconds": dt, "failures": results.count(False)}))


asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
