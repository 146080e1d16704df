"""Admin routes: the user listing, creating users (admins included) and changing roles."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query

from services.auth.entrypoints.deps import ContextDep, CurrentAdmin, IpDep
from services.auth.entrypoints.schemas import CreateUserIn, Role, RoleIn, UserOut, UsersPage
from services.auth.service_layer import accounts
from services.auth.service_layer.errors import Conflict
from shared.problems import problem_responses

router = APIRouter(prefix="/users", tags=["admin"])


@router.get(
    "",
    response_model=UsersPage,
    responses=problem_responses(401, 403, 422),
    summary="Users, oldest first; q searches username, display name and email",
)
async def list_users(
    admin: CurrentAdmin,
    ctx: ContextDep,
    q: Annotated[str | None, Query(max_length=100)] = None,
    role: Role | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> UsersPage:
    items, total = await accounts.list_users(ctx, query=q, role=role, limit=limit, offset=offset)
    return UsersPage(items=[UserOut.of(u) for u in items], total=total, limit=limit, offset=offset)


@router.post(
    "",
    status_code=201,
    response_model=UserOut,
    responses=problem_responses(401, 403, 409, 422),
    summary="Create a user; the only way besides the bootstrap CLI to create an ADMIN",
)
async def create_user(body: CreateUserIn, admin: CurrentAdmin, ctx: ContextDep, ip: IpDep) -> UserOut:
    async with ctx.unit_of_work() as session:
        user = await accounts.create_user(
            ctx,
            session,
            username=body.username,
            password=body.password,
            email=body.email,
            phone=body.phone,
            display_name=body.display_name,
            role=body.role,
            email_verified=body.email_verified,
            actor_id=admin.user.id,
            ip=ip,
        )
    return UserOut.of(user)


@router.get("/{user_id}", response_model=UserOut, responses=problem_responses(401, 403, 404, 422))
async def get_user(user_id: uuid.UUID, admin: CurrentAdmin, ctx: ContextDep) -> UserOut:
    return UserOut.of(await accounts.get_user(ctx, user_id))


@router.patch(
    "/{user_id}/role",
    response_model=UserOut,
    responses=problem_responses(401, 403, 404, 409, 422),
    summary="Change a user's role (audited; the user's sessions end)",
)
async def set_role(
    user_id: uuid.UUID, body: RoleIn, admin: CurrentAdmin, ctx: ContextDep, ip: IpDep
) -> UserOut:
    if user_id == admin.user.id and body.role != "ADMIN":
        raise Conflict("an administrator cannot demote themselves", field="role")
    user = await accounts.set_role(ctx, actor_id=admin.user.id, user_id=user_id, role=body.role, ip=ip)
    return UserOut.of(user)
