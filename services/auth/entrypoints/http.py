"""Auth routes: accounts, sessions, profile, links, phone verification, JWKS; errors as problem JSON."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, FastAPI, Query, Request, Response
from fastapi.responses import JSONResponse

from services.auth.adapters.repository import UserRecord
from services.auth.domain.ratelimit import Decision
from services.auth.domain.tokens import csrf_token_for
from services.auth.entrypoints.admin import router as admin_router
from services.auth.entrypoints.deps import (
    CSRF_HEADER,
    ContextDep,
    CurrentAuth,
    IpDep,
    current_auth,
)
from services.auth.entrypoints.schemas import (
    AcceptedOut,
    CookieSessionOut,
    ForgotPasswordIn,
    LoginIn,
    PasswordChangeIn,
    PhoneCodeSentOut,
    PhoneStartIn,
    PhoneVerifyIn,
    ProfilePatch,
    RefreshIn,
    RegisterIn,
    ResetPasswordIn,
    TokensOut,
    UserOut,
    VerifyEmailIn,
)
from services.auth.service_layer import accounts, links, phone, sessions
from services.auth.service_layer.accounts import ProfileChanges
from services.auth.service_layer.context import AuthContext
from services.auth.service_layer.errors import AuthError, CsrfFailed, InvalidRefreshToken, RateLimited
from services.auth.service_layer.sessions import TokenPair
from shared.problems import problem_response, problem_responses

Mode = Literal["json", "cookie"]
ModeQuery = Query(
    default="json", description="'cookie' puts the tokens in httpOnly cookies instead of the body"
)

router = APIRouter(prefix="/auth", tags=["auth"])


def _with_limits(response: Response, decision: Decision | None) -> None:
    if decision is not None:
        response.headers.update(decision.headers())


def _set_session_cookies(ctx: AuthContext, response: Response, pair: TokenPair) -> str:
    s = ctx.settings
    csrf = csrf_token_for(ctx.secret, pair.session_id)
    common: dict[str, Any] = {"secure": s.cookie_secure, "samesite": "strict", "domain": s.cookie_domain}
    response.set_cookie(
        s.access_cookie_name,
        pair.access_token,
        max_age=s.access_token_ttl_s,
        path="/",
        httponly=True,
        **common,
    )
    response.set_cookie(
        s.refresh_cookie_name,
        pair.refresh_token,
        max_age=s.refresh_token_ttl_s,
        path=s.refresh_cookie_path,
        httponly=True,
        **common,
    )
    # Readable by the page's script, which echoes it in the X-CSRF-Token header.
    response.set_cookie(
        s.csrf_cookie_name, csrf, max_age=s.refresh_token_ttl_s, path="/", httponly=False, **common
    )
    return csrf


def _clear_session_cookies(ctx: AuthContext, response: Response) -> None:
    s = ctx.settings
    common: dict[str, Any] = {"secure": s.cookie_secure, "samesite": "strict", "domain": s.cookie_domain}
    response.delete_cookie(s.access_cookie_name, path="/", httponly=True, **common)
    response.delete_cookie(s.refresh_cookie_name, path=s.refresh_cookie_path, httponly=True, **common)
    response.delete_cookie(s.csrf_cookie_name, path="/", **common)


def _session_body(
    ctx: AuthContext, response: Response, user: UserRecord, pair: TokenPair, mode: Mode
) -> TokensOut | CookieSessionOut:
    if mode == "cookie":
        csrf = _set_session_cookies(ctx, response, pair)
        return CookieSessionOut(user=UserOut.of(user), expires_in=pair.expires_in, csrf_token=csrf)
    return TokensOut(
        user=UserOut.of(user),
        access_token=pair.access_token,
        refresh_token=pair.refresh_token,
        expires_in=pair.expires_in,
    )


@router.post(
    "/register",
    status_code=201,
    response_model=TokensOut | CookieSessionOut,
    responses=problem_responses(403, 409, 422, 429),
    summary="Create an account and log in",
)
async def register(
    body: RegisterIn, ctx: ContextDep, ip: IpDep, response: Response, mode: Mode = ModeQuery
) -> TokensOut | CookieSessionOut:
    _with_limits(response, await ctx.check_limits((ctx.limits.register_ip, ip)))
    async with ctx.unit_of_work() as session:
        user = await accounts.create_user(
            ctx,
            session,
            username=body.username,
            password=body.password,
            email=body.email,
            phone=body.phone,
            display_name=body.display_name,
            ip=ip,
        )
        pair = await sessions.start_session(ctx, session, user)
    return _session_body(ctx, response, user, pair, mode)


@router.post(
    "/login",
    response_model=TokensOut | CookieSessionOut,
    responses=problem_responses(401, 403, 422, 429),
    summary="Log in by username or email",
)
async def login(
    body: LoginIn, ctx: ContextDep, ip: IpDep, response: Response, mode: Mode = ModeQuery
) -> TokensOut | CookieSessionOut:
    # Counted before any hashing: a flood costs one upsert per request, not an argon2 verify.
    decision = await ctx.check_limits(
        (ctx.limits.login_ip, ip), (ctx.limits.login_account, body.login.strip().lower()[:320])
    )
    _with_limits(response, decision)
    user = await accounts.authenticate_password(ctx, login=body.login, password=body.password, ip=ip)
    async with ctx.unit_of_work() as session:
        pair = await sessions.start_session(ctx, session, user)
    return _session_body(ctx, response, user, pair, mode)


@router.post(
    "/refresh",
    response_model=TokensOut | CookieSessionOut,
    responses=problem_responses(401, 403, 422, 429),
    summary="Rotate a refresh token (body, or the refresh cookie plus X-CSRF-Token)",
)
async def refresh(
    request: Request,
    ctx: ContextDep,
    ip: IpDep,
    response: Response,
    body: RefreshIn | None = None,
    mode: Mode = ModeQuery,
) -> TokensOut | CookieSessionOut:
    _with_limits(response, await ctx.check_limits((ctx.limits.refresh_ip, ip)))
    token = body.refresh_token if body else None
    csrf: str | None = None
    if token is None:
        token = request.cookies.get(ctx.settings.refresh_cookie_name)
        if token is None:
            raise InvalidRefreshToken("missing refresh token")
        mode = "cookie"
        csrf = request.headers.get(CSRF_HEADER) or ""
        if csrf != request.cookies.get(ctx.settings.csrf_cookie_name):
            raise CsrfFailed(f"cookie refresh needs the {CSRF_HEADER} header")
    user, pair = await sessions.refresh_session(ctx, refresh_token=token, ip=ip, csrf=csrf)
    return _session_body(ctx, response, user, pair, mode)


@router.post(
    "/logout",
    status_code=204,
    responses=problem_responses(401, 403, 422),
    summary="End this session (access token; or the refresh token in the body when the access token expired)",
)
async def logout(request: Request, ctx: ContextDep, body: RefreshIn | None = None) -> Response:
    if body is not None and body.refresh_token and not request.headers.get("authorization"):
        await sessions.logout_by_refresh_token(ctx, refresh_token=body.refresh_token)
    else:
        auth = await current_auth(request)
        await sessions.logout(ctx, user_id=auth.user.id, session_id=auth.session_id)
    response = Response(status_code=204)
    _clear_session_cookies(ctx, response)
    return response


@router.post(
    "/logout-all",
    status_code=204,
    responses=problem_responses(401, 403),
    summary="End every session of the user",
)
async def logout_all(auth: CurrentAuth, ctx: ContextDep, ip: IpDep) -> Response:
    await sessions.logout_everywhere(ctx, user_id=auth.user.id, ip=ip)
    response = Response(status_code=204)
    _clear_session_cookies(ctx, response)
    return response


@router.get("/me", response_model=UserOut, responses=problem_responses(401))
async def me(auth: CurrentAuth) -> UserOut:
    return UserOut.of(auth.user)


@router.patch(
    "/me",
    response_model=UserOut,
    responses=problem_responses(401, 403, 409, 422),
    summary="Change display name, email (verified again), phone (unverified again) or preferences",
)
async def update_me(body: ProfilePatch, auth: CurrentAuth, ctx: ContextDep) -> UserOut:
    sent = body.model_fields_set
    changes = ProfileChanges(
        display_name=body.display_name,
        email=body.email,
        phone=body.phone,
        preferences=body.preferences.changes() if body.preferences is not None else None,
        clear=frozenset(
            f for f in ("display_name", "email", "phone") if f in sent and getattr(body, f) is None
        ),
    )
    return UserOut.of(await accounts.update_profile(ctx, user_id=auth.user.id, changes=changes))


@router.post(
    "/password",
    response_model=TokensOut | CookieSessionOut,
    responses=problem_responses(401, 403, 422),
    summary="Change the password; every session ends and this one gets new tokens",
)
async def change_password(
    request: Request,
    body: PasswordChangeIn,
    auth: CurrentAuth,
    ctx: ContextDep,
    ip: IpDep,
    response: Response,
) -> TokensOut | CookieSessionOut:
    # The current password is a guessable secret too: limited like a login, per account.
    _with_limits(response, await ctx.check_limits((ctx.limits.login_account, f"user:{auth.user.id}")))
    user = await accounts.change_password(
        ctx,
        user_id=auth.user.id,
        current_password=body.current_password,
        new_password=body.new_password,
        ip=ip,
    )
    async with ctx.unit_of_work() as session:
        pair = await sessions.start_session(ctx, session, user)
    mode: Mode = "cookie" if getattr(request.state, "cookie_auth", False) else "json"
    return _session_body(ctx, response, user, pair, mode)


@router.post("/email/verify", response_model=UserOut, responses=problem_responses(400, 422))
async def verify_email(body: VerifyEmailIn, ctx: ContextDep) -> UserOut:
    return UserOut.of(await links.verify_email(ctx, token=body.token))


@router.post(
    "/email/resend", status_code=202, response_model=AcceptedOut, responses=problem_responses(401, 403)
)
async def resend_email(auth: CurrentAuth, ctx: ContextDep) -> AcceptedOut:
    await links.resend_email_verification(ctx, user=auth.user)
    return AcceptedOut()


@router.post(
    "/password/forgot",
    status_code=202,
    response_model=AcceptedOut,
    responses=problem_responses(422, 429),
    summary="Mail a reset link; answers the same whether or not the address is known",
)
async def forgot_password(
    body: ForgotPasswordIn, ctx: ContextDep, ip: IpDep, response: Response
) -> AcceptedOut:
    decision = await ctx.check_limits(
        (ctx.limits.reset_ip, ip), (ctx.limits.reset_account, body.email.strip().lower())
    )
    _with_limits(response, decision)
    await links.request_password_reset(ctx, email=body.email)
    return AcceptedOut()


@router.post("/password/reset", status_code=204, responses=problem_responses(400, 422, 429))
async def reset_password(body: ResetPasswordIn, ctx: ContextDep, ip: IpDep) -> Response:
    await ctx.check_limits((ctx.limits.reset_ip, ip))
    await links.reset_password(ctx, token=body.token, new_password=body.new_password, ip=ip)
    return Response(status_code=204)


@router.post(
    "/phone/start",
    status_code=202,
    response_model=PhoneCodeSentOut,
    responses=problem_responses(401, 403, 422, 429),
    summary="Text a 6-digit code to the number",
)
async def phone_start(body: PhoneStartIn, auth: CurrentAuth, ctx: ContextDep, ip: IpDep) -> PhoneCodeSentOut:
    sent = await phone.start_verification(ctx, user=auth.user, phone=body.phone, ip=ip)
    return PhoneCodeSentOut(
        phone_masked=sent.phone_masked,
        expires_in=ctx.settings.otp_ttl_s,
        resend_after=sent.resend_after_s,
    )


@router.post(
    "/phone/verify",
    response_model=UserOut,
    responses=problem_responses(400, 401, 403, 422, 429),
    summary="Confirm the code; the number becomes the verified phone",
)
async def phone_verify(body: PhoneVerifyIn, auth: CurrentAuth, ctx: ContextDep, ip: IpDep) -> UserOut:
    user = await phone.confirm_verification(
        ctx, user_id=auth.user.id, phone=body.phone, code=body.code, ip=ip
    )
    return UserOut.of(user)


jwks_router = APIRouter(tags=["keys"])


@jwks_router.get("/.well-known/jwks.json", summary="Public ES256 keys by kid")
async def jwks(ctx: ContextDep) -> JSONResponse:
    return JSONResponse(ctx.keys.jwks(), headers={"Cache-Control": "public, max-age=300"})


def install_routes(app: FastAPI, ctx: AuthContext) -> None:
    """Mount the routers and map use-case errors to problem documents."""

    async def on_auth_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, AuthError)
        headers: dict[str, str] | None = None
        if isinstance(exc, RateLimited):
            headers = exc.decision.headers()
        elif exc.status == 401:
            headers = {"WWW-Authenticate": "Bearer"}
        extra: dict[str, Any] = {}
        if exc.field:
            extra["errors"] = [{"field": exc.field, "message": exc.detail or exc.title}]
        return problem_response(
            exc.status, exc.title, code=exc.code, detail=exc.detail, headers=headers, **extra
        )

    app.add_exception_handler(AuthError, on_auth_error)
    app.include_router(router)
    app.include_router(admin_router)
    app.include_router(jwks_router)
