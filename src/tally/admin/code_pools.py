"""Uploading a reward's pool of coupon codes (codes made elsewhere, e.g. in the store).

The rules are the API's (``redemptions.upload_code_pool``): a file with any bad row, or with a
code another pool holds or a redemption issued, is refused whole and stores nothing; codes the
pool already holds are skipped and counted.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.datastructures import UploadFile

from tally.admin.settings import settings_page
from tally.admin.web import AdminDep, AdminRoute, FormDep, redirect
from tally.errors import FieldProblem, ValidationFailed
from tally.program import redemptions
from tally.program.rewards import MAX_POOL_FILE_BYTES, CodePoolInvalid, pool_lines

router = APIRouter(route_class=AdminRoute)


def _shown(problem: FieldProblem) -> FieldProblem:
    # The settings page lists field and message; the code itself belongs in the message.
    if problem.value is None:
        return problem
    return FieldProblem(problem.field, f"{problem.message}: {problem.value}")


@router.post("/settings/rewards/{reward_id}/codes", include_in_schema=False)
def upload_codes(request: Request, admin: AdminDep, form: FormDep, reward_id: str) -> Response:
    """Add the codes of an uploaded file to a reward's pool, or show every problem."""
    upload = form.get("file")
    content = upload.file.read(MAX_POOL_FILE_BYTES + 1) if isinstance(upload, UploadFile) else b""
    try:
        if not content:
            raise CodePoolInvalid("choose a file of codes", [FieldProblem("file", "required")])
        with admin.unit_of_work() as session:
            redemptions.upload_code_pool(
                session,
                merchant_id=admin.merchant_id,
                reward_id=reward_id,
                lines=pool_lines(content),
            )
    except ValidationFailed as error:
        problems = [_shown(p) for p in error.errors] or [FieldProblem("file", error.detail)]
        problems.insert(0, FieldProblem(f"codes for {reward_id}", error.detail))
        return settings_page(request, admin, "rewards", problems=problems, status_code=422)
    return redirect("/admin/settings/rewards?done=codes-uploaded")
