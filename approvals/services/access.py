"""Services, their API keys and webhook secrets, and reviewer accounts: who may use Gatehouse."""

from __future__ import annotations

import secrets
import string
from collections.abc import Callable, Iterable

from django.contrib.auth.models import Group, User
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import transaction
from django.utils import timezone

from approvals import caches
from approvals.models import (
    ActionType,
    ApiKey,
    AuditEvent,
    Service,
)
from foundation import webhooks
from foundation.errors import ApplicationError, NotFound

_ALPHABET = string.ascii_letters + string.digits


def api_key_create(*, service: Service, label: str = "") -> tuple[ApiKey, str]:
    """Create a key and return it with its full text, which is never stored and shown only now."""
    prefix = secrets.token_hex(4)
    secret = "".join(secrets.choice(_ALPHABET) for _ in range(32))
    key = ApiKey.objects.create(
        service=service, prefix=prefix, secret_hash=ApiKey.hash_secret(secret), label=label
    )
    return key, f"gh_{prefix}_{secret}"


def webhook_secret_generate() -> str:
    import base64

    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


# Apps above the core register what else a new service may be granted there (llmcalls: the
# features it may call through the model proxy): option name -> (help, grant(service, values)).
SERVICE_GRANTS: dict[str, tuple[str, Callable[[Service, list[str]], None]]] = {}


@transaction.atomic
def service_webhook_secret_rotate(*, service: Service, actor: str) -> str:
    """A new signing secret; the old one keeps signing too (two signatures) until the rotation
    is finished. Returns the new secret, which is shown once and never again."""
    locked = Service.objects.select_for_update().get(pk=service.pk)
    secret = webhook_secret_generate()
    Service.objects.filter(pk=locked.pk).update(
        webhook_secret=secret, previous_webhook_secret=locked.webhook_secret
    )
    AuditEvent.objects.create(
        kind="service.webhook_secret_rotated", actor=actor, data={"service": locked.name}
    )
    return secret


@transaction.atomic
def service_webhook_rotation_finish(*, service: Service, actor: str) -> bool:
    """Stop signing with the previous secret (the receivers have the new one)."""
    if (
        not Service.objects.filter(pk=service.pk)
        .exclude(previous_webhook_secret="")
        .update(previous_webhook_secret="")
    ):
        return False
    AuditEvent.objects.create(
        kind="service.webhook_rotation_finished", actor=actor, data={"service": service.name}
    )
    return True


@transaction.atomic
def service_create(
    *,
    name: str,
    action_type_keys: Iterable[str] = (),
    callback_url: str = "",
    grants: dict[str, list[str]] | None = None,
) -> tuple[Service, str]:
    keys = [k for k in action_type_keys if k]
    found = {t.key: t for t in ActionType.objects.filter(key__in=keys)}
    missing = sorted(set(keys) - set(found))
    if missing:
        raise ApplicationError(
            f"Unknown action types: {', '.join(missing)}", code="unknown-action-type"
        )
    if Service.objects.filter(name=name).exists():
        raise ApplicationError(f"A service named {name!r} exists already.", code="duplicate")
    problem = webhooks.url_problem(callback_url) if callback_url else None
    if problem:
        raise ApplicationError(
            f"callback_url is refused: {problem}",
            code="bad-url",
            errors=[{"loc": ["callback_url"], "msg": problem}],
        )
    service = Service.objects.create(
        name=name, callback_url=callback_url, webhook_secret=webhook_secret_generate()
    )
    service.action_types.set(found.values())
    _, plain = api_key_create(service=service, label="created with the service")
    AuditEvent.objects.create(kind="service.created", actor="system", data={"service": name})
    for grant, values in (grants or {}).items():
        if grant not in SERVICE_GRANTS:
            raise ApplicationError(f"Unknown grant: {grant}", code="unknown-grant")
        if values:
            SERVICE_GRANTS[grant][1](service, values)
    return service, plain


def api_key_revoke(*, prefix: str) -> ApiKey:
    with transaction.atomic():
        updated = ApiKey.objects.filter(prefix=prefix, revoked_at__isnull=True).update(
            revoked_at=timezone.now()
        )
        key = ApiKey.objects.select_related("service").filter(prefix=prefix).first()
        if key is None:
            raise NotFound(f"No API key with prefix {prefix!r}.")
        caches.clear_all()
        if updated:
            AuditEvent.objects.create(
                kind="api_key.revoked",
                actor="system",
                data={"service": key.service.name, "prefix": prefix},
            )
    return key


def api_key_authenticate(*, token: str) -> Service | None:
    """The service a bearer token belongs to, or None for a malformed, unknown or revoked key."""
    parts = token.split("_", 2)
    if len(parts) != 3 or parts[0] != "gh" or not parts[1] or not parts[2] or len(parts[1]) > 16:
        return None
    token_hash = ApiKey.hash_secret(token)
    cached: Service | None = caches.api_keys.get(token_hash)
    if cached is not None:
        return cached
    key = (
        ApiKey.objects.select_related("service")
        .filter(prefix=parts[1], revoked_at__isnull=True, service__is_active=True)
        .first()
    )
    if key is None:
        return None
    if not secrets.compare_digest(key.secret_hash, ApiKey.hash_secret(parts[2])):
        return None
    service = key.service
    # Remember which action types the service may propose, so submitting needs no extra query.
    service.allowed_action_type_ids = frozenset(  # type: ignore[attr-defined]
        service.action_types.values_list("pk", flat=True)
    )
    caches.api_keys.set(token_hash, service)
    return service


def password_check(*, password: str, user: User) -> None:
    """Django's password validators (AUTH_PASSWORD_VALIDATORS), as a refusal naming the field:
    every way Gatehouse sets a password runs them, as the admin's forms do."""
    try:
        validate_password(password, user)
    except DjangoValidationError as exc:
        raise ApplicationError(
            "The password is refused: " + " ".join(exc.messages),
            code="weak-password",
            errors=[{"loc": ["password"], "msg": m} for m in exc.messages],
        ) from None


@transaction.atomic
def reviewer_create(
    *, username: str, action_type_keys: Iterable[str], password: str | None = None
) -> tuple[User, list[Group], str | None]:
    """Create (or update) a reviewer allowed to decide the given action types.

    Access goes through groups: each action type's reviewer group (one named
    `reviewers:<key>` is created for a type that has none). Returns the user, the groups
    and a generated password when none was given for a new user (shown once).
    """
    keys = [k.strip() for k in action_type_keys if k.strip()]
    if not keys:
        raise ApplicationError("Name at least one action type.", code="action-types-required")
    found = {t.key: t for t in ActionType.objects.filter(key__in=keys)}
    missing = sorted(set(keys) - set(found))
    if missing:
        raise ApplicationError(
            f"Unknown action types: {', '.join(missing)}", code="unknown-action-type"
        )
    groups = []
    for key in keys:
        action_type = found[key]
        if action_type.reviewer_group is None:
            action_type.reviewer_group = Group.objects.get_or_create(name=f"reviewers:{key}")[0]
            action_type.save(update_fields=["reviewer_group", "updated_at"])
            caches.clear_all()
        groups.append(action_type.reviewer_group)
    user, created = User.objects.get_or_create(username=username)
    generated = None
    if password is None and created:
        generated = password = secrets.token_urlsafe(15)
    if password is not None:
        password_check(password=password, user=user)
        user.set_password(password)
        user.save()
    user.groups.add(*groups)
    AuditEvent.objects.create(
        kind="reviewer.created" if created else "reviewer.updated",
        actor="system",
        data={"reviewer": username, "groups": sorted({g.name for g in groups})},
    )
    return user, list(dict.fromkeys(groups)), generated
