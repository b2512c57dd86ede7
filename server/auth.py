"""Bearer tokens and roles.

The tokens file (`--tokens FILE`, `OMNISTOCK_TOKENS`) has one token per line followed by its
role, separated by whitespace; blank lines and lines starting with `#` are ignored:

    # storefronts
    3f9c0e1b7a4d4c2e9a51d0c8b6e2f7a1  read
    # OMS and WMS/POS feeds
    8d2a6b0f5e1c4e7a9b3d2c1f0e9a8b7c  write
    c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6  admin

Roles nest: `read` may call AvailabilityService, ReservationService.GetReservation and server
reflection; `write` adds ReservationService, SupplyService and SourcingService; `admin` adds
AdminService. Health
checking is open to every caller (load balancers and orchestrators probe without a token). Any
other method is denied to every role, so a service added later is closed until listed here.
Clients send `authorization: Bearer <token>`. Tokens are kept only as SHA-256 digests.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

from omnistock.v1 import admin_pb2, availability_pb2, reservation_pb2, sourcing_pb2, supply_pb2

__all__ = [
    "PUBLIC",
    "ROLES",
    "TOKEN_CHARS_MIN",
    "Tokens",
    "TokensFileError",
    "bearer_token",
    "method_roles",
]

ROLES: dict[str, int] = {"read": 1, "write": 2, "admin": 3}
PUBLIC = 0  # methods anyone may call, without a token
TOKEN_CHARS_MIN = 16
TOKEN_CHARS_MAX = 512
TOKENS_MAX = 10_000

_HEALTH = ("/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch")
_REFLECTION = (
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
)


def _service_methods(module: object, service: str) -> list[str]:
    descriptor = module.DESCRIPTOR.services_by_name[service]  # type: ignore[attr-defined]
    return [f"/{descriptor.full_name}/{m.name}" for m in descriptor.methods]


def method_roles() -> dict[str, int]:
    """The least role rank each known method needs (PUBLIC = no token needed)."""
    table: dict[str, int] = {}
    for method in _HEALTH:
        table[method] = PUBLIC
    for method in _REFLECTION:
        table[method] = ROLES["read"]
    for method in _service_methods(availability_pb2, "AvailabilityService"):
        table[method] = ROLES["read"]
    for method in _service_methods(reservation_pb2, "ReservationService"):
        table[method] = ROLES["read"] if method.endswith("/GetReservation") else ROLES["write"]
    for method in _service_methods(supply_pb2, "SupplyService"):
        table[method] = ROLES["write"]
    # SourceOrder may hold stock (with a reservation_id), so it is a write.
    for method in _service_methods(sourcing_pb2, "SourcingService"):
        table[method] = ROLES["write"]
    for method in _service_methods(admin_pb2, "AdminService"):
        table[method] = ROLES["admin"]
    return table


class TokensFileError(ValueError):
    """The tokens file cannot be used (the message names the file and the line)."""


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class Tokens:
    """Token digests -> role rank."""

    def __init__(self, entries: Iterable[tuple[str, str]]) -> None:
        self._ranks: dict[bytes, int] = {}
        for token, role in entries:
            self._ranks[_digest(token)] = ROLES[role]

    @classmethod
    def parse(cls, text: str, source: str = "<tokens>") -> Tokens:
        entries: list[tuple[str, str]] = []
        seen: set[str] = set()
        for number, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            where = f"{source}:{number}"
            parts = line.split()
            if len(parts) != 2:
                raise TokensFileError(f"{where}: expected `TOKEN ROLE`, got {len(parts)} fields")
            token, role = parts
            if role not in ROLES:
                raise TokensFileError(f"{where}: role {role!r} is not one of {', '.join(ROLES)}")
            if not TOKEN_CHARS_MIN <= len(token) <= TOKEN_CHARS_MAX or not token.isascii():
                raise TokensFileError(
                    f"{where}: a token is {TOKEN_CHARS_MIN}..{TOKEN_CHARS_MAX} ASCII characters"
                )
            if token in seen:
                raise TokensFileError(f"{where}: the token is listed twice")
            seen.add(token)
            entries.append((token, role))
            if len(entries) > TOKENS_MAX:
                raise TokensFileError(f"{source}: more than {TOKENS_MAX} tokens")
        if not entries:
            raise TokensFileError(f"{source}: no tokens (auth would refuse every call)")
        return cls(entries)

    @classmethod
    def load(cls, path: str | Path) -> Tokens:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise TokensFileError(f"cannot read tokens file {path}: {exc}") from None
        return cls.parse(text, str(path))

    def rank(self, token: str) -> int | None:
        """The token's role rank, or None for an unknown token."""
        return self._ranks.get(_digest(token))

    def __len__(self) -> int:
        return len(self._ranks)


def bearer_token(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    """The token of an `authorization: Bearer <token>` header, if there is one."""
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str):
            scheme, _, token = value.strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            return None
    return None
