"""The four workloads of issue 7; each is ``async def run(ctx: Context) -> None``."""
