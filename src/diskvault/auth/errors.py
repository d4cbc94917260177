from diskvault.errors import Conflict, DiskvaultError, Forbidden, Unauthorized


class InvalidCredentials(Unauthorized):
    template = "invalid username or password"


class InvalidToken(Unauthorized):
    template = "invalid token: {detail}; log in again (diskvault login)"


class MissingToken(Unauthorized):
    template = "authentication required: send 'Authorization: Bearer <token>' (diskvault login)"


class RoleRequired(Forbidden):
    template = "this action needs the {role} role; your role is {current}"


class UserExists(Conflict):
    template = "user {username} already exists"


class LastAdmin(Conflict):
    template = (
        "{username} is the last active admin: make another user admin first, "
        "or nobody could manage users again"
    )


class AdminRequiredForSignup(Forbidden):
    template = "an admin already exists: only an admin can create users"


class LoginThrottled(DiskvaultError):
    template = (
        "too many failed logins for {subject}; retry in {retry_after} s "
        "(the limit is {setting} per DISKVAULT_LOGIN_WINDOW_S)"
    )
    status = 429
    exit_code = 6
    title = "Too many requests"
