"""ComfyUI's websocket as the frontend reads it: the JSON events and binary preview images sent to one client."""
import asyncio
import json
import struct
import threading
import uuid

PREVIEW_IMAGE = 1  # ComfyUI's BinaryEventTypes.PREVIEW_IMAGE
IMAGE_TYPES = {1: "JPEG", 2: "PNG"}


class Watcher:
    """Connects as ``client_id`` (queue prompts with it) and records until ``close()``."""

    def __init__(self, server_url: str):
        self.client_id = str(uuid.uuid4())
        self.url = server_url.replace("http://", "ws://") + f"/ws?clientId={self.client_id}"
        self.events, self.binary = [], []
        self._open, self._closing = threading.Event(), False
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()
        if not self._open.wait(30):
            raise RuntimeError(f"no websocket at {self.url}")

    async def _run(self):
        import aiohttp
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(self.url) as ws:
                self._open.set()
                while not self._closing:
                    try:
                        message = await ws.receive(timeout=0.2)
                    except asyncio.TimeoutError:
                        continue
                    if message.type == aiohttp.WSMsgType.TEXT:
                        self.events.append(json.loads(message.data))
                    elif message.type == aiohttp.WSMsgType.BINARY:
                        self.binary.append(message.data)
                    else:
                        break

    def close(self):
        self._closing = True
        self._thread.join(10)

    def progress(self, node: str) -> list:
        """``[(value, max)]`` of the progress events of ``node``, in order."""
        return [(e["data"]["value"], e["data"]["max"]) for e in list(self.events)
                if e.get("type") == "progress" and e["data"].get("node") == node]

    def previews(self) -> list:
        """``[(image type, image bytes)]`` of the preview images received."""
        found = []
        for data in list(self.binary):
            event, kind = struct.unpack(">II", data[:8])
            if event == PREVIEW_IMAGE:
                found.append((IMAGE_TYPES.get(kind, kind), data[8:]))
        return found
