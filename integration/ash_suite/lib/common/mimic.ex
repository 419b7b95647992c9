defmodule Mimic do
  @moduledoc """
  Stand-in for the `mimic` package, which is not among the offline packages: Ash's
  `test_helper.exs` calls `Mimic.copy/1` and six test files `use Mimic`. `copy/1,2` and the
  setup helpers (`set_mimic_global`...) do nothing, so the suite loads; `expect`, `stub`, `reject` and `call_original` raise, so the tests
  that mock fail in both modes and stay outside the comparison (they are not in baseline.txt).
  """

  defmacro __using__(_opts) do
    quote do
      import Mimic,
        only: [
          expect: 3,
          expect: 4,
          stub: 3,
          reject: 1,
          reject: 3,
          call_original: 3,
          set_mimic_global: 1,
          set_mimic_private: 1,
          verify_on_exit!: 1
        ]
    end
  end

  def copy(_module, _opts \\ []), do: :ok

  def set_mimic_global(_context), do: :ok
  def set_mimic_private(_context), do: :ok
  def verify_on_exit!(_context), do: :ok

  def expect(_module, _name, _fun), do: unavailable!()
  def expect(_module, _name, _count, _fun), do: unavailable!()
  def stub(_module, _name, _fun), do: unavailable!()
  def reject(_fun), do: unavailable!()
  def reject(_module, _name, _arity), do: unavailable!()
  def call_original(_module, _name, _args), do: unavailable!()

  defp unavailable!,
    do: raise("Mimic is not available offline (integration/ash_suite stand-in)")
end
