"""Errors in the OpenAI shape (`{"error": {"message", "type", "param", "code"}}`), so clients parse them."""

from dataclasses import dataclass, field

from fastapi.responses import JSONResponse

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    500: "api_error",
    503: "service_unavailable",
}


@dataclass
class APIError(Exception):
    status: int
    message: str
    code: str
    param: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def response(self) -> JSONResponse:
        body = {
            "error": {
                "message": self.message,
                "type": ERROR_TYPES.get(self.status, "api_error"),
                "param": self.param,
                "code": self.code,
            }
        }
        return JSONResponse(body, status_code=self.status, headers=self.headers)


def retry_after(seconds: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, int(-(-seconds // 1))))}
