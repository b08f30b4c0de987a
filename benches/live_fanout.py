"""Fan-out client of benches/live_fanout.sh: N /live WebSocket clients, one Redis publisher.

Each message carries its publish time in nanoseconds; every client records the delay from
PUBLISH to receipt. Prints one Markdown row: clients, messages, deliveries per second summed
over clients, and the p50 and p99 latency in milliseconds.
"""

import argparse
import asyncio
import json
import time

import redis.asyncio as aioredis
import websockets


async def client(url, expected, latencies, ready):
    async with websockets.connect(url, max_size=None) as socket:
        confirmation = json.loads(await socket.recv())
        assert confirmation["status"] == "subscribed", confirmation
        ready.release()
        received = 0
        while received < expected:
            message = json.loads(await socket.recv())
            latencies.append(time.time_ns() - message["sent_ns"])
            received += 1


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--live-url", required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--clients", type=int, required=True)
    parser.add_argument("--messages", type=int, required=True)
    parser.add_argument("--rate", type=float, required=True, help="messages per second")
    args = parser.parse_args()

    latencies = []
    ready = asyncio.Semaphore(0)
    tasks = [
        asyncio.create_task(client(args.live_url, args.messages, latencies, ready))
        for _ in range(args.clients)
    ]
    for _ in range(args.clients):
        await asyncio.wait_for(ready.acquire(), 60)

    publisher = aioredis.from_url(args.redis_url)
    padding = "x" * 100
    started = time.perf_counter()
    for index in range(args.messages):
        payload = json.dumps({"n": index, "sent_ns": time.time_ns(), "pad": padding})
        await publisher.publish("bybit:ticks", payload)
        pause = started + (index + 1) / args.rate - time.perf_counter()
        if pause > 0:
            await asyncio.sleep(pause)
    await asyncio.wait_for(asyncio.gather(*tasks), 300)
    elapsed = time.perf_counter() - started
    await publisher.aclose()

    latencies.sort()
    p50 = latencies[len(latencies) // 2] / 1e6
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] / 1e6
    rate = len(latencies) / elapsed
    print(f"| {args.clients} | {args.messages} | {rate:,.0f} | {p50:.2f} | {p99:.2f} |")


asyncio.run(main())
